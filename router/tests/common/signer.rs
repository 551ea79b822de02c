//! A SendGrid-style signer: a fresh P-256 key, its public key as SendGrid shows it (base64 DER
//! SubjectPublicKeyInfo), and signatures over `timestamp || body`.

use base64::Engine;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::EncodePublicKey;

pub struct Signer256 {
    key: SigningKey,
}

impl Signer256 {
    pub fn new() -> Self {
        Self {
            key: SigningKey::random(&mut rand_core::OsRng),
        }
    }

    pub fn public_key_b64(&self) -> String {
        let der = self
            .key
            .verifying_key()
            .to_public_key_der()
            .expect("SPKI DER");
        base64::engine::general_purpose::STANDARD.encode(der.as_bytes())
    }

    pub fn sign(&self, timestamp: &str, body: &[u8]) -> String {
        let mut signed = timestamp.as_bytes().to_vec();
        signed.extend_from_slice(body);
        let signature: Signature = self.key.sign(&signed);
        base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes())
    }
}

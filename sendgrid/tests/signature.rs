//! Signature checks against a key made here (the official SendGrid vectors are in the
//! conformance suite): what verifies, and that every change to key, timestamp or body fails.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use mailroom_sendgrid::{check_timestamp, verify_signature, PublicKey, SignatureError};
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};

fn key(seed: u8) -> (SigningKey, String) {
    let signing = SigningKey::from_bytes(&[seed; 32].into()).expect("valid scalar");
    // SubjectPublicKeyInfo for id-ecPublicKey / prime256v1, then the uncompressed point.
    let mut der = hex::decode("3059301306072a8648ce3d020106082a8648ce3d030107034200").unwrap();
    der.extend_from_slice(signing.verifying_key().to_encoded_point(false).as_bytes());
    (signing, STANDARD.encode(der))
}

fn sign(k: &SigningKey, timestamp: &str, body: &[u8]) -> String {
    let mut msg = timestamp.as_bytes().to_vec();
    msg.extend_from_slice(body);
    let sig: Signature = k.sign(&msg);
    STANDARD.encode(sig.to_der().as_bytes())
}

const BODY: &[u8] =
    b"[{\"event\":\"delivered\",\"email\":\"a@example.com\"},\r\n{\"event\":\"open\"}]\r\n";

#[test]
fn valid_and_tampered() {
    let (k, pk) = key(7);
    let sig = sign(&k, "1700000000", BODY);
    assert_eq!(verify_signature(&pk, &sig, "1700000000", BODY), Ok(()));

    let parsed = PublicKey::from_base64(&pk).unwrap();
    assert_eq!(parsed.verify(&sig, "1700000000", BODY), Ok(()));
    assert_eq!(pk.parse::<PublicKey>().unwrap(), parsed);

    assert_eq!(
        parsed.verify(&sig, "1700000001", BODY),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(
        parsed.verify(&sig, "1700000000", &BODY[..BODY.len() - 2]),
        Err(SignatureError::Mismatch)
    );
    let rejoined = String::from_utf8(BODY.to_vec())
        .unwrap()
        .replace("},\r\n{", "},{");
    assert_eq!(
        parsed.verify(&sig, "1700000000", rejoined.as_bytes()),
        Err(SignatureError::Mismatch)
    );
    let (_, other) = key(9);
    assert_eq!(
        verify_signature(&other, &sig, "1700000000", BODY),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn encoding_errors_are_typed() {
    let (_, pk) = key(7);
    assert!(matches!(
        verify_signature(&pk, "not base64!", "1", BODY),
        Err(SignatureError::BadSignatureEncoding(_))
    ));
    assert!(matches!(
        verify_signature(&pk, "AAAA", "1", BODY),
        Err(SignatureError::BadSignatureEncoding(_))
    ));
    assert!(matches!(
        verify_signature("", "AAAA", "1", BODY),
        Err(SignatureError::BadPublicKey(_))
    ));
    let err = verify_signature("MFkw", "AAAA", "1", BODY).unwrap_err();
    assert!(
        err.to_string().starts_with("public key is not base64 DER"),
        "{err}"
    );
}

#[test]
fn timestamp_window() {
    assert_eq!(check_timestamp("1700000000", 1_700_000_100, 300), Ok(()));
    let err = check_timestamp("1700000000", 1_700_000_400, 300).unwrap_err();
    assert_eq!(
        err.to_string(),
        "timestamp 1700000000 is 400s away from now, outside the 300s window"
    );
    assert!(matches!(
        check_timestamp("17e8", 0, 300),
        Err(SignatureError::BadTimestamp(_))
    ));
}

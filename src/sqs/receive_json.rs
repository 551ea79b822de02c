//! `ReceiveMessage` answers read with serde_json instead of the SDK's own JSON reader.
//!
//! Why: on the mixed bench load the SDK's deserializer of `ReceiveMessage` was 17% of the
//! worker's CPU (perf, BENCHMARKS.md 2026-12-06). A router envelope is JSON, so its SQS body
//! holds quotes, so its text in the answer holds backslashes; the SDK then finds the string's
//! end byte by byte and unescapes the whole body (about 20 KB on that load) one byte at a time
//! into a growing buffer. serde_json skips to the next escape eight bytes at a time and copies
//! the runs between escapes whole.
//!
//! How, without forking the SDK: [`UseJsonReceive`] is given to the receive call
//! (`customize().interceptor(..)`); once per call it puts [`JsonReceive`] in place of the
//! operation's response deserializer in the call's config bag, which is where the SDK's
//! orchestrator looks it up. [`JsonReceive`] reads a successful answer itself and builds the
//! SDK's own `ReceiveMessageOutput`, so the caller sees the same type and values. Anything else
//! goes to the SDK's own deserializer, taken from the operation's own runtime plugin: an error
//! status (the SDK maps error codes to typed errors), and a 200 answer this reader does not
//! take (a shape it does not know, a `null` in a map, invalid base64). So it can only be faster
//! than the SDK, never stricter or looser; the tests hold both readers to the same output. The
//! one difference: the output carries no request id (the SDK's setter is private to it), which
//! nothing reads from a successful receive.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use aws_sdk_sqs::config::{ConfigBag, Intercept, RuntimePlugin};
use aws_sdk_sqs::operation::receive_message::{ReceiveMessage, ReceiveMessageOutput};
use aws_sdk_sqs::primitives::Blob;
use aws_sdk_sqs::types::{Message, MessageAttributeValue, MessageSystemAttributeName};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeSerializationInterceptorContextRef, Error, Output,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpResponse, OrchestratorError};
use aws_smithy_runtime_api::client::ser_de::{DeserializeResponse, SharedResponseDeserializer};
use base64::Engine;
use serde::Deserialize;

/// The interceptor that makes a receive call read its answer with [`JsonReceive`].
#[derive(Debug)]
pub struct UseJsonReceive;

impl Intercept for UseJsonReceive {
    fn name(&self) -> &'static str {
        "mailroom::UseJsonReceive"
    }

    // Once per call: the bag's interceptor layer holds for every attempt of it.
    fn read_before_execution(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        cfg.interceptor_state()
            .store_put(SharedResponseDeserializer::new(JsonReceive::shared()));
        Ok(())
    }
}

/// Reads a `ReceiveMessage` answer; see the module docs.
#[derive(Debug, Clone)]
struct JsonReceive {
    /// The operation's own config layer, which holds the SDK's deserializer.
    sdk: Arc<ConfigBag>,
}

impl JsonReceive {
    /// One per process: the SDK's layer is built once.
    fn shared() -> Self {
        static SHARED: std::sync::OnceLock<JsonReceive> = std::sync::OnceLock::new();
        SHARED
            .get_or_init(|| {
                let mut bag = ConfigBag::base();
                if let Some(layer) = ReceiveMessage::new().config() {
                    bag.push_shared_layer(layer);
                }
                JsonReceive { sdk: Arc::new(bag) }
            })
            .clone()
    }

    fn sdk_deserialize(
        &self,
        response: &HttpResponse,
        cfg: &ConfigBag,
    ) -> Result<Output, OrchestratorError<Error>> {
        match self.sdk.load::<SharedResponseDeserializer>() {
            Some(sdk) => sdk.deserialize_nonstreaming_with_config(response, cfg),
            None => Err(OrchestratorError::other(
                "the SDK's ReceiveMessage runtime plugin has no response deserializer",
            )),
        }
    }
}

impl DeserializeResponse for JsonReceive {
    fn deserialize_nonstreaming_with_config(
        &self,
        response: &HttpResponse,
        cfg: &ConfigBag,
    ) -> Result<Output, OrchestratorError<Error>> {
        if response.status().as_u16() == 200 {
            if let Some(output) = response.body().bytes().and_then(parse) {
                ANSWERS_READ_HERE.fetch_add(1, Ordering::Relaxed);
                return Ok(Output::erase(output));
            }
            SUCCESSFUL_ANSWERS_READ_BY_THE_SDK.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("a ReceiveMessage answer went to the SDK's own reader");
        }
        self.sdk_deserialize(response, cfg)
    }
}

static SUCCESSFUL_ANSWERS_READ_BY_THE_SDK: AtomicU64 = AtomicU64::new(0);
static ANSWERS_READ_HERE: AtomicU64 = AtomicU64::new(0);

/// How many answers this process read with [`parse`]: it grows with every receive that got an
/// answer, unless the SDK stopped consulting the config bag for the deserializer, which would
/// leave this reader unused without a failure (`tests/sqs_receive.rs` checks).
pub fn answers_read_here() -> u64 {
    ANSWERS_READ_HERE.load(Ordering::Relaxed)
}

/// How many successful (200) answers this process handed to the SDK's own reader: none, when
/// the server writes what SQS writes (`tests/sqs_receive.rs` checks rustack and LocalStack).
pub fn successful_answers_read_by_the_sdk() -> u64 {
    SUCCESSFUL_ANSWERS_READ_BY_THE_SDK.load(Ordering::Relaxed)
}

/// A successful answer, or `None` when this reader does not take it (the SDK's will).
pub fn parse(body: &[u8]) -> Option<ReceiveMessageOutput> {
    let answer: Answer = serde_json::from_slice(body).ok()?;
    let messages = within(answer.messages, |list| {
        list.into_iter().map(WireMessage::into_sdk).collect()
    })?;
    Some(
        ReceiveMessageOutput::builder()
            .set_messages(messages)
            .build(),
    )
}

/// An optional member read with `read`: `Some(None)` when absent, `None` when `read` refuses it
/// (so the whole answer goes to the SDK).
fn within<T, U>(member: Option<T>, read: impl FnOnce(T) -> Option<U>) -> Option<Option<U>> {
    match member {
        None => Some(None),
        Some(value) => read(value).map(Some),
    }
}

/// The answer's JSON (AWS JSON 1.0 protocol, `ReceiveMessageResult`); unknown members are
/// skipped, as the SDK skips them.
#[derive(Deserialize)]
struct Answer {
    #[serde(rename = "Messages")]
    messages: Option<Vec<WireMessage>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireMessage {
    message_id: Option<String>,
    receipt_handle: Option<String>,
    #[serde(rename = "MD5OfBody")]
    md5_of_body: Option<String>,
    body: Option<String>,
    attributes: Option<HashMap<String, String>>,
    #[serde(rename = "MD5OfMessageAttributes")]
    md5_of_message_attributes: Option<String>,
    message_attributes: Option<HashMap<String, WireAttribute>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireAttribute {
    string_value: Option<String>,
    binary_value: Option<String>,
    string_list_values: Option<Vec<String>>,
    binary_list_values: Option<Vec<String>>,
    data_type: Option<String>,
}

impl WireMessage {
    fn into_sdk(self) -> Option<Message> {
        let attributes = self.attributes.map(|map| {
            map.into_iter()
                .map(|(k, v)| (MessageSystemAttributeName::from(k.as_str()), v))
                .collect()
        });
        let message_attributes = within(self.message_attributes, |map| {
            map.into_iter()
                .map(|(k, v)| Some((k, v.into_sdk()?)))
                .collect()
        })?;
        Some(
            Message::builder()
                .set_message_id(self.message_id)
                .set_receipt_handle(self.receipt_handle)
                .set_md5_of_body(self.md5_of_body)
                .set_body(self.body)
                .set_attributes(attributes)
                .set_md5_of_message_attributes(self.md5_of_message_attributes)
                .set_message_attributes(message_attributes)
                .build(),
        )
    }
}

impl WireAttribute {
    /// `None` for what the SDK would refuse or read otherwise (no `DataType`, bad base64).
    fn into_sdk(self) -> Option<MessageAttributeValue> {
        let blob = |b64: String| {
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .ok()
                .map(Blob::new)
        };
        let binary_value = within(self.binary_value, blob)?;
        let binary_list_values = within(self.binary_list_values, |list| {
            list.into_iter().map(blob).collect()
        })?;
        MessageAttributeValue::builder()
            .set_string_value(self.string_value)
            .set_binary_value(binary_value)
            .set_string_list_values(self.string_list_values)
            .set_binary_list_values(binary_list_values)
            .set_data_type(self.data_type)
            .build()
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sqs::operation::receive_message::ReceiveMessageError;
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;
    use proptest::prelude::*;

    fn response(status: u16, body: &str) -> HttpResponse {
        HttpResponse::new(
            StatusCode::try_from(status).unwrap(),
            SdkBody::from(body.to_string()),
        )
    }

    /// What the SDK's own deserializer makes of an answer.
    fn by_the_sdk(status: u16, body: &str) -> Result<Output, OrchestratorError<Error>> {
        JsonReceive::shared().sdk_deserialize(&response(status, body), &ConfigBag::base())
    }

    /// What the receive call gets now.
    fn by_json_receive(status: u16, body: &str) -> Result<Output, OrchestratorError<Error>> {
        JsonReceive::shared()
            .deserialize_nonstreaming_with_config(&response(status, body), &ConfigBag::base())
    }

    fn output(result: Result<Output, OrchestratorError<Error>>) -> ReceiveMessageOutput {
        result
            .expect("an output")
            .downcast::<ReceiveMessageOutput>()
            .expect("a ReceiveMessageOutput")
    }

    /// An output or an error, comparable.
    fn described(result: Result<Output, OrchestratorError<Error>>) -> String {
        match result {
            Ok(out) => format!("{:?}", output(Ok(out))),
            Err(e) => format!("error: {e:?}"),
        }
    }

    fn same_as_the_sdk(body: &str) {
        let ours = parse(body.as_bytes()).expect("this reader takes the answer");
        assert_eq!(ours, output(by_the_sdk(200, body)), "answer: {body}");
        assert_eq!(ours, output(by_json_receive(200, body)));
    }

    /// A router envelope's answer as SQS (or LocalStack, which escapes all non-ASCII) sends it.
    const ANSWER: &str = r#"{"Messages":[{"MessageId":"5fea7756-0ea4-451a-a703-a558b933e274",
        "ReceiptHandle":"MbZj6wDWli+JvwwJaBV+3dcjk2YW2vA3+STFFljTM8tJJg6HRG6PYSasuWXPJB+Cw==",
        "MD5OfBody":"fafb00f5732ab283681e124bf8747ed1",
        "Body":"{\"mailroom\":1,\"kind\":\"events\",\"headers\":[[\"user-agent\",\"SendGrid Event API\"]],\"body_b64\":\"W3siZW1haWwiOiJhQGV4YW1wbGUuY29tIn1d\",\"x\":\"\\\\ \\/ \\b\\f\\n\\r\\t \u00e9 \ud83d\ude00 é 😀\"}",
        "Attributes":{"SentTimestamp":"1764979200000","ApproximateReceiveCount":"3",
            "AWSTraceHeader":"Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1","SomethingNew":"x"},
        "MD5OfMessageAttributes":"d25a6aea97eb8f585bfa92d314504a92",
        "MessageAttributes":{"mailroom.kind":{"StringValue":"events","DataType":"String"},
            "mailroom.version":{"StringValue":"1","DataType":"Number"},
            "blob":{"BinaryValue":"AAEC/w==","DataType":"Binary"},
            "lists":{"StringListValues":["a","b"],"BinaryListValues":["AA=="],"DataType":"String"}}},
        {"MessageId":"m2","ReceiptHandle":"r2","Body":"plain text","Unknown":{"a":[1,2,null]}}],
        "SomethingElse":true}"#;

    #[test]
    fn an_answer_reads_as_the_sdk_reads_it() {
        same_as_the_sdk(ANSWER);
        let out = parse(ANSWER.as_bytes()).unwrap();
        let m = &out.messages.as_ref().unwrap()[0];
        let body = m.body.as_deref().unwrap();
        assert!(
            body.starts_with(r#"{"mailroom":1,"kind":"events""#),
            "{body}"
        );
        assert!(body.ends_with(" é 😀 é 😀\"}"), "{body}");
        assert_eq!(
            m.attributes.as_ref().unwrap()[&MessageSystemAttributeName::ApproximateReceiveCount],
            "3"
        );
        let blob = &m.message_attributes.as_ref().unwrap()["blob"];
        assert_eq!(
            blob.binary_value.as_ref().unwrap().as_ref(),
            &[0, 1, 2, 255]
        );
    }

    #[test]
    fn empty_and_missing_message_lists_read_as_the_sdk_reads_them() {
        same_as_the_sdk("{}");
        same_as_the_sdk(r#"{"Messages":[]}"#);
        same_as_the_sdk(r#"{"Messages":null}"#);
    }

    #[test]
    fn an_answer_this_reader_does_not_take_goes_to_the_sdk() {
        for body in [
            // A null in a map: the SDK skips the entry.
            r#"{"Messages":[{"MessageId":"m","Body":"b","Attributes":{"SentTimestamp":null}}]}"#,
            // An attribute without its DataType.
            r#"{"Messages":[{"MessageId":"m","MessageAttributes":{"a":{"StringValue":"x"}}}]}"#,
        ] {
            assert!(parse(body.as_bytes()).is_none(), "{body}");
            assert_eq!(
                described(by_json_receive(200, body)),
                described(by_the_sdk(200, body)),
                "{body}"
            );
        }
        // Not JSON at all: the SDK's own error.
        assert!(parse(b"<html>").is_none());
        assert!(by_json_receive(200, "<html>").is_err());
    }

    #[test]
    fn an_error_status_gets_the_sdks_error() {
        let body = r#"{"__type":"com.amazonaws.sqs#QueueDoesNotExist","message":"The specified queue does not exist."}"#;
        let ours = by_json_receive(400, body);
        assert_eq!(described(ours), described(by_the_sdk(400, body)));
        let err = by_json_receive(400, body).expect_err("an error");
        let err = err
            .as_operation_error()
            .expect("an operation error")
            .downcast_ref::<ReceiveMessageError>()
            .expect("a ReceiveMessageError");
        assert_eq!(err.meta().code(), Some("QueueDoesNotExist"), "{err:?}");
    }

    /// JSON text of `s` with every non-ASCII character and `/` escaped, as some servers write
    /// it (Python's `json.dumps` escapes non-ASCII by default).
    fn ascii_escaped(s: &str) -> String {
        let mut out = String::from("\"");
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '/' => out.push_str("\\/"),
                c if c.is_ascii() && !c.is_ascii_control() => out.push(c),
                c => {
                    let mut units = [0u16; 2];
                    for u in c.encode_utf16(&mut units) {
                        out.push_str(&format!("\\u{u:04x}"));
                    }
                }
            }
        }
        out.push('"');
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Any body and attribute text, escaped either way, reads as the SDK reads it.
        #[test]
        fn any_text_reads_as_the_sdk_reads_it(
            body in any::<String>(),
            attribute in any::<String>(),
            bytes in proptest::collection::vec(any::<u8>(), 0..40),
            ascii in any::<bool>(),
        ) {
            let text = |s: &str| if ascii { ascii_escaped(s) } else { serde_json::to_string(s).unwrap() };
            let answer = format!(
                r#"{{"Messages":[{{"MessageId":"m","ReceiptHandle":"r","Body":{},"MessageAttributes":{{{}:{{"StringValue":{},"DataType":"String"}},"b":{{"BinaryValue":"{}","DataType":"Binary"}}}}}}]}}"#,
                text(&body),
                text(&attribute),
                text(&attribute),
                base64::engine::general_purpose::STANDARD.encode(&bytes),
            );
            let ours = parse(answer.as_bytes()).expect("this reader takes the answer");
            prop_assert_eq!(&ours, &output(by_the_sdk(200, &answer)));
            let messages = ours.messages.unwrap();
            prop_assert_eq!(messages[0].body.as_deref(), Some(body.as_str()));
        }
    }
}

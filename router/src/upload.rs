//! One S3 object written as it is produced, in parts, never held whole.
//!
//! A streamed inbound post can be 40 MiB of envelope; holding it would make `serve`'s memory
//! grow with the number and size of posts in flight. A [`MultipartWriter`] keeps at most one
//! part (plus the last chunk written past it) and uploads a part as soon as it is full, so a
//! post costs about [`PART_BYTES`] whatever its size. Parts are uploaded one at a time, in
//! order: reading the request waits while a part is stored, which is TCP's backpressure on the
//! sender rather than a buffer here.
//!
//! The writer never leaves an upload behind on purpose: whoever gives up calls
//! [`MultipartWriter::abort`] (every error path in [`crate::stream_inbound`] does), and an
//! upload that was neither completed nor aborted (a panic) is what the bucket's lifecycle rule
//! `AbortIncompleteMultipartUpload` is for.

use bytes::Bytes;

use crate::sink::{Sink, SinkError, UploadedPart};

/// The size of every part but the last: above S3's 5 MiB minimum, and a 40 MiB envelope is
/// 6 parts (S3 allows 10,000).
pub const PART_BYTES: usize = 8 * 1024 * 1024;

/// An open multipart upload and the part being filled.
pub struct MultipartWriter<'s, S> {
    sink: &'s S,
    bucket: String,
    key: String,
    upload_id: String,
    part: Vec<u8>,
    parts: Vec<UploadedPart>,
    /// Bytes handed to S3 so far (full parts).
    uploaded: usize,
}

/// A completed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub bucket: String,
    pub key: String,
    /// The object's size in bytes.
    pub size: usize,
    /// How many parts it was uploaded in.
    pub parts: usize,
}

impl<'s, S: Sink> MultipartWriter<'s, S> {
    /// Starts the upload of `bucket`/`key`.
    pub async fn start(sink: &'s S, bucket: &str, key: &str) -> Result<Self, SinkError> {
        let upload_id = sink.create_multipart_upload(bucket, key).await?;
        Ok(Self {
            sink,
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            upload_id,
            part: Vec::with_capacity(PART_BYTES),
            parts: Vec::new(),
            uploaded: 0,
        })
    }

    /// The part being filled: append to it, then call [`Self::upload_full_parts`].
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.part
    }

    /// Bytes written so far (uploaded and buffered).
    pub fn written(&self) -> usize {
        self.uploaded + self.part.len()
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// Uploads every full [`PART_BYTES`] part in the buffer; what is left stays for the next.
    pub async fn upload_full_parts(&mut self) -> Result<(), SinkError> {
        while self.part.len() >= PART_BYTES {
            // Only the overflow is copied; the next part grows from it after this one is
            // stored, so two full parts are never held at once.
            let rest = self.part[PART_BYTES..].to_vec();
            self.part.truncate(PART_BYTES);
            let full = std::mem::replace(&mut self.part, rest);
            self.upload(full).await?;
        }
        Ok(())
    }

    async fn upload(&mut self, bytes: Vec<u8>) -> Result<(), SinkError> {
        let number = i32::try_from(self.parts.len() + 1).unwrap_or(i32::MAX);
        let len = bytes.len();
        let part = self
            .sink
            .upload_part(
                &self.bucket,
                &self.key,
                &self.upload_id,
                number,
                Bytes::from(bytes),
            )
            .await?;
        self.parts.push(part);
        self.uploaded += len;
        Ok(())
    }

    /// Uploads what is buffered as the last part and completes the object. On an error the
    /// upload is still open: the caller aborts it with the writer it gets back.
    pub async fn complete(mut self) -> Result<StoredObject, (Self, SinkError)> {
        if !self.part.is_empty() || self.parts.is_empty() {
            let last = std::mem::take(&mut self.part);
            if let Err(e) = self.upload(last).await {
                return Err((self, e));
            }
        }
        let parts = self.parts.clone();
        if let Err(e) = self
            .sink
            .complete_multipart_upload(&self.bucket, &self.key, &self.upload_id, parts)
            .await
        {
            return Err((self, e));
        }
        Ok(StoredObject {
            bucket: self.bucket,
            key: self.key,
            size: self.uploaded,
            parts: self.parts.len(),
        })
    }

    /// Drops the upload and its stored parts. A failed abort is logged (the lifecycle rule's
    /// `AbortIncompleteMultipartUpload` is the backstop); nothing was queued either way.
    pub async fn abort(self, request_id: &str) {
        match self
            .sink
            .abort_multipart_upload(&self.bucket, &self.key, &self.upload_id)
            .await
        {
            Ok(()) => {
                tracing::info!(%request_id, bucket = %self.bucket, key = %self.key,
                    parts = self.parts.len(), "multipart upload aborted");
            }
            Err(e) => {
                tracing::error!(%request_id, bucket = %self.bucket, key = %self.key, error = %e,
                    "could not abort the multipart upload; the bucket's lifecycle rule will");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::sink::Attribute;

    /// Keeps each part's size and whether the upload was completed or aborted.
    #[derive(Default)]
    struct Parts {
        sizes: Mutex<Vec<usize>>,
        joined: Mutex<Vec<u8>>,
        ended: Mutex<Option<&'static str>>,
    }

    impl Sink for Parts {
        async fn send_message(
            &self,
            _queue_url: &str,
            _body: String,
            _attributes: Vec<Attribute>,
            _grouping: crate::sink::Grouping<'_>,
        ) -> Result<String, SinkError> {
            Ok("unused".into())
        }

        async fn put_object(&self, _: &str, _: &str, _: Bytes) -> Result<(), SinkError> {
            Ok(())
        }

        async fn create_multipart_upload(&self, _: &str, _: &str) -> Result<String, SinkError> {
            Ok("upload-1".into())
        }

        async fn upload_part(
            &self,
            _: &str,
            _: &str,
            _: &str,
            number: i32,
            bytes: Bytes,
        ) -> Result<UploadedPart, SinkError> {
            self.sizes.lock().expect("lock").push(bytes.len());
            self.joined.lock().expect("lock").extend_from_slice(&bytes);
            Ok(UploadedPart {
                number,
                etag: format!("etag-{number}"),
                checksum_crc32: None,
            })
        }

        async fn complete_multipart_upload(
            &self,
            _: &str,
            _: &str,
            _: &str,
            parts: Vec<UploadedPart>,
        ) -> Result<(), SinkError> {
            let numbers: Vec<i32> = parts.iter().map(|p| p.number).collect();
            assert_eq!(numbers, (1..=parts.len() as i32).collect::<Vec<_>>());
            *self.ended.lock().expect("lock") = Some("completed");
            Ok(())
        }

        async fn abort_multipart_upload(&self, _: &str, _: &str, _: &str) -> Result<(), SinkError> {
            *self.ended.lock().expect("lock") = Some("aborted");
            Ok(())
        }
    }

    /// Every part but the last is exactly PART_BYTES (S3 refuses parts under 5 MiB but the
    /// last), whatever sizes the writes come in, and the parts join to what was written.
    #[tokio::test]
    async fn parts_are_full_size_but_the_last_and_join_to_what_was_written() {
        let sink = Parts::default();
        let mut writer = MultipartWriter::start(&sink, "b", "k")
            .await
            .expect("start");
        let mut expected = Vec::new();
        let mut n = 0u32;
        for write in [
            1usize,
            300_000,
            7,
            5 * 1024 * 1024,
            65_536,
            9 * 1024 * 1024,
            3,
        ] {
            let bytes: Vec<u8> = (0..write)
                .map(|_| {
                    n = n.wrapping_add(1);
                    (n % 251) as u8
                })
                .collect();
            writer.buffer().extend_from_slice(&bytes);
            expected.extend_from_slice(&bytes);
            writer.upload_full_parts().await.expect("parts");
            assert!(
                writer.buffer().len() < PART_BYTES,
                "never more than a part held"
            );
        }
        let stored = writer
            .complete()
            .await
            .map_err(|(_, e)| e)
            .expect("complete");
        let sizes = sink.sizes.lock().expect("lock").clone();
        let (last, full) = sizes.split_last().expect("parts");
        assert!(full.iter().all(|s| *s == PART_BYTES), "{sizes:?}");
        assert!(*last > 0 && *last <= PART_BYTES);
        assert_eq!(stored.size, expected.len());
        assert_eq!(stored.parts, sizes.len());
        assert!(*sink.joined.lock().expect("lock") == expected);
        assert_eq!(*sink.ended.lock().expect("lock"), Some("completed"));
    }

    #[tokio::test]
    async fn an_aborted_writer_ends_its_upload() {
        let sink = Parts::default();
        let mut writer = MultipartWriter::start(&sink, "b", "k")
            .await
            .expect("start");
        writer.buffer().resize(PART_BYTES + 10, b'a');
        writer.upload_full_parts().await.expect("part");
        writer.abort("r-1").await;
        assert_eq!(*sink.ended.lock().expect("lock"), Some("aborted"));
        assert_eq!(*sink.sizes.lock().expect("lock"), vec![PART_BYTES]);
    }
}

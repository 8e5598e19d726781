//! [`MemoryObjects`]: one S3 bucket in memory, with S3's multipart rules
//! and ETags, and a record of the uploads that were aborted.

use crate::ports::objects::{ObjectStore, Part};
use crate::ports::SinkError;
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// A multipart upload in progress: its key and parts by number.
struct Upload {
    key: String,
    parts: BTreeMap<i32, Bytes>,
}

/// A bucket in memory.
#[derive(Default)]
pub struct MemoryObjects {
    /// Objects by key: their bytes and ETag.
    objects: Mutex<BTreeMap<String, (Vec<u8>, String)>>,
    uploads: Mutex<BTreeMap<String, Upload>>,
    created: Mutex<usize>,
    aborted: Mutex<Vec<String>>,
    /// How long an UploadPart takes, so that parts overlap in flight.
    pub part_latency: Duration,
}

fn md5_hex(b: &[u8]) -> String {
    use md5::{Digest, Md5};
    Md5::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

fn refused(what: String) -> SinkError {
    SinkError::Other(anyhow::anyhow!(what))
}

impl MemoryObjects {
    /// The object's bytes, if it exists.
    pub fn object(&self, key: &str) -> Option<Vec<u8>> {
        self.objects.lock().unwrap().get(key).map(|o| o.0.clone())
    }

    /// Every object's key.
    pub fn keys(&self) -> Vec<String> {
        self.objects.lock().unwrap().keys().cloned().collect()
    }

    /// Multipart uploads neither completed nor aborted.
    pub fn open_uploads(&self) -> usize {
        self.uploads.lock().unwrap().len()
    }

    /// The ids of the uploads aborted, in order.
    pub fn aborted(&self) -> Vec<String> {
        self.aborted.lock().unwrap().clone()
    }
}

#[async_trait]
impl ObjectStore for MemoryObjects {
    async fn put_object(&self, key: &str, body: Bytes) -> Result<(), SinkError> {
        let etag = format!("\"{}\"", md5_hex(&body));
        self.objects
            .lock()
            .unwrap()
            .insert(key.into(), (body.to_vec(), etag));
        Ok(())
    }

    async fn create_upload(&self, key: &str) -> Result<String, SinkError> {
        let mut created = self.created.lock().unwrap();
        *created += 1;
        let id = format!("upload-{created}");
        self.uploads.lock().unwrap().insert(
            id.clone(),
            Upload {
                key: key.to_string(),
                parts: BTreeMap::new(),
            },
        );
        Ok(id)
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> Result<Part, SinkError> {
        if !self.part_latency.is_zero() {
            tokio::time::sleep(self.part_latency).await;
        }
        let etag = format!("\"{}\"", md5_hex(&body));
        match self.uploads.lock().unwrap().get_mut(upload_id) {
            Some(u) if u.key == key => u.parts.insert(number, body),
            _ => return Err(refused(format!("NoSuchUpload: {upload_id}"))),
        };
        Ok(Part {
            number,
            etag,
            checksum_crc32: None,
        })
    }

    async fn complete(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[Part],
    ) -> Result<bool, SinkError> {
        let mut uploads = self.uploads.lock().unwrap();
        let u = match uploads.get(upload_id) {
            Some(u) if u.key == key => u,
            _ => return Err(refused(format!("NoSuchUpload: {upload_id}"))),
        };
        // S3 takes exactly the listed parts, in ascending order, by ETag.
        let numbers: Vec<i32> = parts.iter().map(|p| p.number).collect();
        if !numbers.windows(2).all(|w| w[0] < w[1]) {
            return Err(refused("InvalidPartOrder".into()));
        }
        let mut all = Vec::new();
        for p in parts {
            match u.parts.get(&p.number) {
                Some(b) if format!("\"{}\"", md5_hex(b)) == p.etag => all.extend_from_slice(b),
                _ => return Err(refused(format!("InvalidPart: {}", p.number))),
            }
        }
        let etag = format!(
            "\"{}\"",
            crate::sink::s3::multipart_etag(parts).expect("MD5 part ETags")
        );
        uploads.remove(upload_id);
        self.objects.lock().unwrap().insert(key.into(), (all, etag));
        Ok(true)
    }

    async fn abort(&self, _key: &str, upload_id: &str) -> Result<(), SinkError> {
        self.uploads.lock().unwrap().remove(upload_id);
        self.aborted.lock().unwrap().push(upload_id.into());
        Ok(())
    }

    async fn head_etag(&self, key: &str) -> Result<Option<String>, SinkError> {
        Ok(self.objects.lock().unwrap().get(key).map(|o| o.1.clone()))
    }

    async fn uploads_of(&self, key: &str) -> Result<Vec<(String, i64)>, SinkError> {
        let now = crate::clock::now_ms();
        Ok(self
            .uploads
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, u)| u.key == key)
            .map(|(id, _)| (id.clone(), now))
            .collect())
    }
}

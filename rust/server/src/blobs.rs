//! Blob storage through `object_store`: a local folder by default, any S3-compatible store when
//! configured. Services keep metadata in SQL and bytes here.

use std::sync::Arc;

use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};

#[derive(Clone, Debug)]
pub struct Blobs {
    store: Arc<dyn ObjectStore>,
}

impl Blobs {
    /// `file://DIR` or `s3://BUCKET[/PREFIX]` (credentials and endpoint from AWS_* variables).
    pub fn open(url: &str) -> anyhow::Result<Self> {
        let store: Arc<dyn ObjectStore> = if let Some(dir) = url.strip_prefix("file://") {
            // Owner-only: saves are encrypted, but their sizes and owners are not.
            crate::data_files::private_dir(std::path::Path::new(dir))?;
            Arc::new(LocalFileSystem::new_with_prefix(dir)?)
        } else if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let s3 = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()?;
            if prefix.is_empty() {
                Arc::new(s3)
            } else {
                Arc::new(object_store::prefix::PrefixStore::new(s3, prefix))
            }
        } else {
            anyhow::bail!("unsupported blob store {url:?}: expected file://DIR or s3://BUCKET")
        };
        Ok(Self { store })
    }

    /// Writes the whole object; readers never see a partial one (the local store writes a
    /// temporary file and renames it, S3 PUT is atomic).
    pub async fn put(&self, key: &str, bytes: Bytes) -> object_store::Result<()> {
        self.store
            .put(&Path::from(key), PutPayload::from(bytes))
            .await
            .map(|_| ())
    }

    pub async fn get(&self, key: &str) -> object_store::Result<Bytes> {
        self.store.get(&Path::from(key)).await?.bytes().await
    }

    /// The "folders" right under `prefix` (`saves` → `saves/<user>`), on every store.
    pub async fn list_folders(&self, prefix: &str) -> object_store::Result<Vec<String>> {
        let listed = self
            .store
            .list_with_delimiter(Some(&Path::from(prefix)))
            .await?;
        Ok(listed
            .common_prefixes
            .iter()
            .map(ToString::to_string)
            .collect())
    }

    /// Every object under `prefix` with when it was last written.
    pub async fn list(
        &self,
        prefix: &str,
    ) -> object_store::Result<Vec<(String, chrono::DateTime<chrono::Utc>)>> {
        use futures::TryStreamExt;
        self.store
            .list(Some(&Path::from(prefix)))
            .map_ok(|meta| (meta.location.to_string(), meta.last_modified))
            .try_collect()
            .await
    }

    /// Deleting a missing object is not an error.
    pub async fn delete(&self, key: &str) -> object_store::Result<()> {
        match self.store.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

//! The image resource: a name bound to a target descriptor (an index or manifest in the content
//! store), with labels, per namespace. One trait, a local implementation in `strata-images` and a
//! remote one (a gRPC client) in `strata-grpc`; one conformance suite runs against both.
//!
//! Images are what keeps pulled content alive: every image's target is a garbage-collection root,
//! and the target reaches the rest through `containerd.io/gc.ref.*` labels on the blobs.

use crate::descriptor::Descriptor;
use crate::digest::Digest;
use crate::errdefs::{Error, Result};
use std::collections::HashMap;
use std::future::Future;
use std::time::SystemTime;

/// Longest image name accepted, in bytes.
pub const MAX_NAME_LENGTH: usize = 4096;

/// An image as one namespace sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Usually a reference such as `docker.io/library/busybox:latest`; any non-empty printable
    /// string is accepted, as containerd does.
    pub name: String,
    /// Labels (see [`crate::labels::validate`]).
    pub labels: HashMap<String, String>,
    /// The blob the name points at: an index or a manifest.
    pub target: Descriptor,
    /// Set by the store at creation; kept across updates.
    pub created_at: SystemTime,
    /// Set by the store at every update.
    pub updated_at: SystemTime,
}

impl crate::filters::Adaptor for Image {
    fn field(&self, path: &[String]) -> Option<String> {
        match path {
            [f] if f == "name" => Some(self.name.clone()).filter(|n| !n.is_empty()),
            [f, g] if f == "target" && g == "digest" => Some(self.target.digest.to_string()),
            [f, g] if f == "target" && g == "mediatype" => {
                Some(self.target.media_type.clone()).filter(|m| !m.is_empty())
            }
            [f, rest @ ..] if f == "labels" && !rest.is_empty() => {
                self.labels.get(&rest.join(".")).cloned()
            }
            [f, rest @ ..] if f == "annotations" && !rest.is_empty() => {
                self.target.annotations.get(&rest.join(".")).cloned()
            }
            _ => None,
        }
    }
}

/// How an image is deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    /// Run garbage collection before answering, so what only this image held is gone on return.
    pub sync: bool,
    /// Delete only if the image still points at this digest (NotFound otherwise).
    pub target: Option<Digest>,
}

/// Checks an image name: non-empty, at most [`MAX_NAME_LENGTH`] bytes, no control characters.
pub fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid_argument("image name must not be empty"));
    }
    if name.len() > MAX_NAME_LENGTH {
        let shown: String = name.chars().take(40).collect();
        return Err(Error::invalid_argument(format!(
            "image name {shown:?}… is longer than {MAX_NAME_LENGTH} bytes"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::invalid_argument(format!(
            "image name {name:?} must not contain control characters"
        )));
    }
    Ok(())
}

/// Checks what containerd stores of a target: a media type and a positive size (the digest is
/// valid by construction).
pub fn validate_target(name: &str, target: &Descriptor) -> Result<()> {
    if target.media_type.is_empty() {
        return Err(Error::invalid_argument(format!(
            "image {name:?}: target media type must be set"
        )));
    }
    if target.size == 0 {
        return Err(Error::invalid_argument(format!(
            "image {name:?}: target size must be greater than zero"
        )));
    }
    Ok(())
}

/// Named images per namespace.
pub trait ImageStore: Send + Sync + 'static {
    /// NotFound naming the image when absent.
    fn get(&self, ns: &str, name: &str) -> impl Future<Output = Result<Image>> + Send;
    /// Images matching any of `filters` (fields `name`, `target.digest`, `target.mediatype`,
    /// `labels.<key>`, `annotations.<key>`), by name.
    fn list(&self, ns: &str, filters: &[String])
    -> impl Future<Output = Result<Vec<Image>>> + Send;
    /// AlreadyExists when the name is taken. The store sets both timestamps.
    fn create(&self, ns: &str, image: Image) -> impl Future<Output = Result<Image>> + Send;
    /// Without field paths the image is replaced (name and creation time kept); with them only
    /// `labels`, `labels.<key>`, `target`, `annotations` and `annotations.<key>` change. Returns
    /// the stored image.
    fn update(
        &self,
        ns: &str,
        image: Image,
        fieldpaths: &[String],
    ) -> impl Future<Output = Result<Image>> + Send;
    /// NotFound when absent (or when `opts.target` names another digest).
    fn delete(
        &self,
        ns: &str,
        name: &str,
        opts: DeleteOptions,
    ) -> impl Future<Output = Result<()>> + Send;
}

//! Label validation, with containerd's limit: a key and its value together at most 4096 bytes.

use crate::errdefs::Error;
use std::collections::HashMap;

const MAX_SIZE: usize = 4096;

pub fn validate(labels: &HashMap<String, String>) -> Result<(), Error> {
    for (k, v) in labels {
        validate_one(k, v)?;
    }
    Ok(())
}

pub fn validate_one(key: &str, value: &str) -> Result<(), Error> {
    if key.is_empty() {
        return Err(Error::invalid_argument("label key must not be empty"));
    }
    if key.len() + value.len() > MAX_SIZE {
        let shown: String = key.chars().take(10).collect();
        return Err(Error::invalid_argument(format!(
            "label key and value length ({} bytes) greater than maximum size ({MAX_SIZE} bytes), key: {shown}",
            key.len() + value.len()
        )));
    }
    Ok(())
}

//! Identifiers for volumes and reservations.

use flowhost_guest::TaskError;

/// A fresh random id of 16 hex characters; random rather than sequential so concurrent flows
/// never need to coordinate.
pub fn new_id() -> Result<String, TaskError> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes)
        .map_err(|e| TaskError::new("random-unavailable", format!("cannot generate an id: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

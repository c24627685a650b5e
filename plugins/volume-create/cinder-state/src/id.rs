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

/// The id, 16 hex characters, that one call of a task makes whenever it runs: derived from
/// its run, its task entry and what the id is for (`"reservation"`, `"volume"`). A retried or
/// resumed call thereby finds the reservation or record its earlier attempt made instead of
/// making a second one, and a revert finds it even when execute failed after writing it.
pub fn invocation_id(run_id: &str, task: &str, what: &str) -> String {
    fingerprint(&[run_id.as_bytes(), task.as_bytes(), what.as_bytes()])
}

/// 64-bit FNV-1a over `parts` (each followed by a 0xff byte, which UTF-8 text never holds, so
/// the boundaries of text parts count), as 16 hex characters. Stable across builds and platforms.
pub(crate) fn fingerprint(parts: &[&[u8]]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in parts.iter().flat_map(|p| p.iter().chain(&[0xff])) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invocation_ids_are_stable_and_tell_their_parts_apart() {
        let a = invocation_id("run-1", "quota_reserve", "reservation");
        assert_eq!(a, invocation_id("run-1", "quota_reserve", "reservation"));
        assert_eq!(a.len(), 16);
        assert_ne!(a, invocation_id("run-2", "quota_reserve", "reservation"));
        assert_ne!(a, invocation_id("run-1", "quota_reserve", "volume"));
        assert_ne!(invocation_id("ab", "c", "x"), invocation_id("a", "bc", "x"));
    }
}

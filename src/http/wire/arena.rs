//! [`bytes_of`]: the bytes of a response (its JSON body, its header
//! values) copied into a per-thread arena and handed out as `Bytes` that
//! share it. A `Bytes` of its own would cost an allocation for the copy,
//! and one more the first time it is sliced or cloned (when it becomes
//! shared); from the arena both are free, and the arena itself costs two
//! allocations per [`CHUNK`] (a few dozen responses). A chunk is freed
//! when the last response that shares it has been written.

use std::cell::RefCell;

use actix_web::web::{Bytes, BytesMut};

/// The arena's unit of allocation.
const CHUNK: usize = 16 * 1024;

/// Larger copies are made on their own, not in the arena (one response's
/// would otherwise keep a whole chunk alive for little).
const MAX_SHARED: usize = CHUNK / 4;

thread_local! {
    static ARENA: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// `data`, copied into this thread's arena.
pub(crate) fn bytes_of(data: &[u8]) -> Bytes {
    if data.len() > MAX_SHARED {
        return Bytes::copy_from_slice(data);
    }
    ARENA.with(|arena| {
        let mut arena = arena.borrow_mut();
        if arena.capacity() < data.len() {
            // A fresh chunk; the old one lives on in the `Bytes` that
            // still share it.
            *arena = BytesMut::with_capacity(CHUNK);
        }
        arena.extend_from_slice(data);
        arena.split().freeze()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_survive_the_chunks_that_follow() {
        let kept: Vec<(Vec<u8>, Bytes)> = (0..3_000u32)
            .map(|i| {
                let data = format!("response {i} {}", "x".repeat(i as usize % 300)).into_bytes();
                let b = bytes_of(&data);
                (data, b)
            })
            .collect();
        for (data, b) in &kept {
            assert_eq!(&b[..], &data[..]);
            assert_eq!(b.slice(2..5), data[2..5]);
        }
        let big = vec![7u8; MAX_SHARED + 1];
        assert_eq!(bytes_of(&big), big);
        assert_eq!(bytes_of(b""), Bytes::new());
    }
}

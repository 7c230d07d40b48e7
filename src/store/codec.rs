//! The one place values are encoded for the store: bincode 2 (pinned `=2.0.1`)
//! through serde, standard configuration (varint integers, little endian).

use serde::{de::DeserializeOwned, Serialize};

#[derive(Debug, thiserror::Error)]
#[error("codec: {0}")]
pub(crate) struct CodecError(String);

const CONFIG: bincode::config::Configuration = bincode::config::standard();

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, CONFIG).map_err(|e| CodecError(e.to_string()))
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, read) =
        bincode::serde::decode_from_slice(bytes, CONFIG).map_err(|e| CodecError(e.to_string()))?;
    if read != bytes.len() {
        return Err(CodecError(format!(
            "{} trailing bytes after the value",
            bytes.len() - read
        )));
    }
    Ok(value)
}

/// `value`, then two tails: `first` when either is not the default, then
/// `second` when it is not - the shape of a value that grew twice, read
/// by [`decode_with_tails`] whichever version wrote it.
pub(crate) fn encode_with_tails<T, U, V>(
    value: &T,
    first: &U,
    second: &V,
) -> Result<Vec<u8>, CodecError>
where
    T: Serialize,
    U: Serialize + Default + PartialEq,
    V: Serialize + Default + PartialEq,
{
    let mut bytes = encode(value)?;
    let has_second = *second != V::default();
    if has_second || *first != U::default() {
        encode_onto(first, &mut bytes)?;
    }
    if has_second {
        encode_onto(second, &mut bytes)?;
    }
    Ok(bytes)
}

/// A value [`encode_with_tails`] wrote: a tail
/// that is absent reads as the default.
pub(crate) fn decode_with_tails<T, U, V>(bytes: &[u8]) -> Result<(T, U, V), CodecError>
where
    T: DeserializeOwned,
    U: DeserializeOwned + Default,
    V: DeserializeOwned + Default,
{
    let (value, read) =
        bincode::serde::decode_from_slice(bytes, CONFIG).map_err(|e| CodecError(e.to_string()))?;
    let rest = &bytes[read..];
    if rest.is_empty() {
        return Ok((value, U::default(), V::default()));
    }
    let (first, read) =
        bincode::serde::decode_from_slice(rest, CONFIG).map_err(|e| CodecError(e.to_string()))?;
    let rest = &rest[read..];
    let second = if rest.is_empty() {
        V::default()
    } else {
        decode(rest)?
    };
    Ok((value, first, second))
}

/// The first fields of a value, as the shape `T` that begins like it;
/// the rest of the bytes are not read.
pub(crate) fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    bincode::serde::decode_from_slice(bytes, CONFIG)
        .map(|(v, _)| v)
        .map_err(|e| CodecError(e.to_string()))
}

/// A rollup cell, with what format 4 added as its first tail and what
/// format 6 added (token kinds) as its second.
pub(crate) fn encode_cell(cell: &crate::rollup::Cell) -> Result<Vec<u8>, CodecError> {
    encode_with_tails(cell, &cell.ext, &cell.ext6)
}

pub(crate) fn decode_cell(bytes: &[u8]) -> Result<crate::rollup::Cell, CodecError> {
    let (mut cell, ext, kinds): (
        crate::rollup::Cell,
        crate::rollup::CellExt,
        crate::rollup::CellExt6,
    ) = decode_with_tails(bytes)?;
    cell.ext = ext;
    cell.ext6 = kinds;
    Ok(cell)
}

/// Encodes `items` as consecutive runs, each decodable as a `Vec<T>` and
/// taking at most `budget` bytes unless one item alone is larger. (A
/// `Vec<T>` is its length as a varint `u64`, then its items: so each item
/// is encoded once and the runs are put together from those bytes.)
pub(crate) fn encode_chunks<T: Serialize>(
    items: &[T],
    budget: usize,
) -> Result<Vec<Vec<u8>>, CodecError> {
    Ok(encode_counted_chunks(items, budget)?
        .into_iter()
        .map(|(chunk, _)| chunk)
        .collect())
}

/// [`encode_chunks`], with how many items each run holds.
pub(crate) fn encode_counted_chunks<T: Serialize>(
    items: &[T],
    budget: usize,
) -> Result<Vec<(Vec<u8>, usize)>, CodecError> {
    let mut chunks = Vec::new();
    // The items of the run being made, encoded straight onto it (no buffer
    // per item); reused from run to run.
    let mut body: Vec<u8> = Vec::new();
    let mut count: u64 = 0;
    let run = |items: &[u8], count: u64| -> Result<(Vec<u8>, usize), CodecError> {
        let mut chunk = Vec::with_capacity(9 + items.len());
        encode_onto(&count, &mut chunk)?;
        chunk.extend_from_slice(items);
        Ok((chunk, count as usize))
    };
    for item in items {
        let start = body.len();
        encode_onto(item, &mut body)?;
        if count > 0 && body.len() + 9 > budget {
            // This item starts the next run.
            chunks.push(run(&body[..start], count)?);
            body.drain(..start);
            count = 0;
        }
        count += 1;
    }
    if count > 0 {
        chunks.push(run(&body, count)?);
    }
    Ok(chunks)
}

/// Appends `value`'s encoding to `out` (no buffer of its own).
pub(crate) fn encode_onto<T: Serialize>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    bincode::serde::encode_into_std_write(value, out, CONFIG)
        .map(|_| ())
        .map_err(|e| CodecError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_values() {
        let v: (u64, String, Option<f64>, Vec<(i64, bool)>) =
            (7, "x".into(), Some(0.25), vec![(-3, true)]);
        type V = (u64, String, Option<f64>, Vec<(i64, bool)>);
        assert_eq!(decode::<V>(&encode(&v).unwrap()).unwrap(), v);
    }

    #[test]
    fn two_tails_read_whichever_version_wrote_them() {
        type Three = ((u64, String), (String, bool), (u64, u64));
        let old = encode(&(1u64, "a".to_string())).unwrap();
        let once = encode_with_tails(
            &(1u64, "a".to_string()),
            &("v".to_string(), true),
            &(0u64, 0u64),
        )
        .unwrap();
        let (v, a, b): Three = decode_with_tails(&old).unwrap();
        assert_eq!((v, a, b), ((1, "a".into()), Default::default(), (0, 0)));
        let (_, a, b): Three = decode_with_tails(&once).unwrap();
        assert_eq!((a, b), (("v".into(), true), (0, 0)));
        // Only the second tail set: the first is written, empty, before it.
        let twice = encode_with_tails(
            &(1u64, "a".to_string()),
            &(String::new(), false),
            &(3u64, 4u64),
        )
        .unwrap();
        let (_, a, b): Three = decode_with_tails(&twice).unwrap();
        assert_eq!((a, b), (Default::default(), (3, 4)));
        // Neither set: the oldest shape's bytes.
        assert_eq!(
            encode_with_tails(
                &(1u64, "a".to_string()),
                &(String::new(), false),
                &(0u64, 0u64)
            )
            .unwrap(),
            old
        );
        let mut bad = twice.clone();
        bad.push(1);
        assert!(decode_with_tails::<(u64, String), (String, bool), (u64, u64)>(&bad).is_err());
    }

    #[test]
    fn rejects_garbage_and_trailing_bytes() {
        assert!(decode::<String>(&[0xff, 0xff, 0xff]).is_err());
        let mut bytes = encode(&7u64).unwrap();
        bytes.push(0);
        assert!(decode::<u64>(&bytes).is_err());
    }

    #[test]
    fn chunks_decode_as_vecs_within_the_budget() {
        for n in [0usize, 1, 2, 250, 251, 300, 70_000] {
            let items: Vec<(i64, String)> =
                (0..n).map(|i| (i as i64 - 7, "t".repeat(i % 40))).collect();
            let chunks = encode_chunks(&items, 4_000).unwrap();
            let mut back = Vec::new();
            for c in &chunks {
                assert!(c.len() <= 4_000, "{} bytes", c.len());
                back.extend(decode::<Vec<(i64, String)>>(c).unwrap());
            }
            assert_eq!(back, items, "{n} items");
            // Each run is byte for byte the encoding of its items as a Vec.
            let mut at = 0;
            for (c, k) in encode_counted_chunks(&items, 4_000).unwrap() {
                assert_eq!(c, encode(&&items[at..at + k]).unwrap());
                at += k;
            }
            assert_eq!(at, n);
        }
        // One item over the budget is a chunk of its own.
        let big = vec!["x".repeat(10_000), "y".into()];
        let chunks = encode_chunks(&big, 4_000).unwrap();
        assert_eq!(chunks.len(), 2);
        assert_eq!(decode::<Vec<String>>(&chunks[0]).unwrap(), big[..1]);
    }
}

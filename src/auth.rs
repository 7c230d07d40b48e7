//! API keys and the admin token.
//!
//! A tenant key is `tg_` + 32 base62 characters, shown once at creation and
//! kept only as its SHA-256 hash ([`KeyHash`]). The admin token is compared in
//! constant time.

use std::hash::{BuildHasher, Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
pub const KEY_PREFIX: &str = "tg_";
const KEY_BODY_LEN: usize = 32;

/// SHA-256 of a secret. Its bytes are uniformly spread, so the tables hash it
/// by taking eight of them ([`KeyHasher`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    #[inline]
    pub fn of(secret: &str) -> KeyHash {
        KeyHash(Sha256::digest(secret.as_bytes()).into())
    }
}

impl Hash for KeyHash {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(b));
    }
}

/// A pass-through hasher for [`KeyHash`] (already a cryptographic hash).
#[derive(Clone, Copy, Default)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ *b as u64;
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

impl BuildHasher for KeyHasher {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(0)
    }
}

/// A new random secret: `tg_` + 32 base62 characters (about 190 bits).
pub fn generate_key() -> String {
    random_token(KEY_PREFIX, KEY_BODY_LEN)
}

fn random_token(prefix: &str, len: usize) -> String {
    let mut rng = rand::rngs::OsRng;
    let mut s = String::with_capacity(prefix.len() + len);
    s.push_str(prefix);
    for _ in 0..len {
        s.push(BASE62[rng.gen_range(0..BASE62.len())] as char);
    }
    s
}

/// A new random id with a prefix, e.g. `key_3fA9...`.
pub fn random_id(prefix: &str) -> String {
    random_token(prefix, 16)
}

/// The shape check done before hashing, so junk never reaches the tables.
pub fn looks_like_key(s: &str) -> bool {
    s.len() == KEY_PREFIX.len() + KEY_BODY_LEN
        && s.starts_with(KEY_PREFIX)
        && s[KEY_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric())
}

/// The admin token, held as a hash and compared in constant time.
pub struct AdminToken(KeyHash);

impl AdminToken {
    pub fn new(token: &str) -> AdminToken {
        AdminToken(KeyHash::of(token))
    }

    pub fn matches(&self, presented: &str) -> bool {
        KeyHash::of(presented).0.ct_eq(&self.0 .0).into()
    }

    /// The token from `TOLLGATE_ADMIN_TOKEN`, else from `<data dir>/admin-token`,
    /// else a new one written there with mode 0600. Returns the token and, when
    /// it lives in a file, that file's path.
    pub fn load_or_create(
        from_env: Option<&str>,
        data_dir: &Path,
    ) -> std::io::Result<(AdminToken, Option<PathBuf>)> {
        if let Some(t) = from_env.filter(|t| !t.is_empty()) {
            return Ok((AdminToken::new(t), None));
        }
        let path = data_dir.join("admin-token");
        if let Ok(existing) = std::fs::read_to_string(&path) {
            let t = existing.trim();
            if !t.is_empty() {
                return Ok((AdminToken::new(t), Some(path)));
            }
        }
        let token = random_token("tga_", 40);
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&path)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        writeln!(f, "{token}")?;
        f.sync_all()?;
        Ok((AdminToken::new(&token), Some(path)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_documented_shape() {
        let k = generate_key();
        assert!(looks_like_key(&k), "{k}");
        assert_ne!(generate_key(), k);
        assert!(!looks_like_key("tg_short"));
        assert!(!looks_like_key(&format!("xx_{}", &k[3..])));
    }

    #[test]
    fn admin_token_file_is_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (t1, path) = AdminToken::load_or_create(None, dir.path()).unwrap();
        let path = path.unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let written = std::fs::read_to_string(&path).unwrap();
        assert!(t1.matches(written.trim()));
        let (t2, _) = AdminToken::load_or_create(None, dir.path()).unwrap();
        assert!(t2.matches(written.trim()));
        assert!(!t2.matches("wrong"));
        let (t3, p3) = AdminToken::load_or_create(Some("env-token"), dir.path()).unwrap();
        assert!(t3.matches("env-token") && p3.is_none());
    }
}

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
pub(crate) const KEY_PREFIX: &str = "tg_";
const KEY_BODY_LEN: usize = 32;

/// SHA-256 of a secret. Its bytes are uniformly spread, so the tables hash it
/// by taking eight of them ([`KeyHasher`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    /// SHA-256 of `secret`. A key (35 bytes) fits one block: it is padded
    /// on the stack and compressed once, without the streaming hasher's
    /// buffering (`sha2::block_api::compress256` picks the CPU's SHA extensions as
    /// `Sha256` does); longer secrets take the streaming path. Both give
    /// the same digest.
    #[inline]
    pub fn of(secret: &str) -> KeyHash {
        let bytes = secret.as_bytes();
        if bytes.len() > ONE_BLOCK_MAX {
            return KeyHash(Sha256::digest(bytes).into());
        }
        let mut block = [0u8; 64];
        block[..bytes.len()].copy_from_slice(bytes);
        block[bytes.len()] = 0x80;
        block[56..].copy_from_slice(&(bytes.len() as u64 * 8).to_be_bytes());
        let mut state = SHA256_IV;
        sha2::block_api::compress256(&mut state, &[block]);
        let mut out = [0u8; 32];
        for (o, w) in out.chunks_exact_mut(4).zip(state) {
            o.copy_from_slice(&w.to_be_bytes());
        }
        KeyHash(out)
    }
}

/// The longest message SHA-256 pads into one 64-byte block (a 0x80 byte
/// and the 8-byte bit length follow it).
const ONE_BLOCK_MAX: usize = 55;

/// SHA-256's initial hash value (FIPS 180-4, 5.3.3).
const SHA256_IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

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
pub(crate) fn random_id(prefix: &str) -> String {
    random_token(prefix, 16)
}

/// The shape check done before hashing, so junk never reaches the tables.
pub(crate) fn looks_like_key(s: &str) -> bool {
    s.len() == KEY_PREFIX.len() + KEY_BODY_LEN
        && s.starts_with(KEY_PREFIX)
        && s[KEY_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric())
}

/// The admin token, held as a hash and compared in constant time.
pub struct AdminToken(KeyHash);

/// An admin token from the environment shorter than this is warned about.
const MIN_STRONG_TOKEN: usize = 24;

impl AdminToken {
    pub fn new(token: &str) -> AdminToken {
        AdminToken(KeyHash::of(token))
    }

    pub(crate) fn matches(&self, presented: &str) -> bool {
        KeyHash::of(presented).0.ct_eq(&self.0 .0).into()
    }

    /// The token from `TOLLGATE_ADMIN_TOKEN`, else from `<data dir>/admin-token`,
    /// else a new one written there with mode 0600. Returns the token and, when
    /// it lives in a file, that file's path. An existing file is refused when
    /// it is a symbolic link (it would be followed, and overwritten) or when
    /// other users can read it.
    pub(crate) fn load_or_create(
        from_env: Option<&str>,
        data_dir: &Path,
    ) -> std::io::Result<(AdminToken, Option<PathBuf>)> {
        let path = data_dir.join("admin-token");
        if let Some(t) = from_env.filter(|t| !t.is_empty()) {
            if t.chars().count() < MIN_STRONG_TOKEN {
                tracing::warn!(
                    length = t.chars().count(),
                    "TOLLGATE_ADMIN_TOKEN is short: whoever guesses it administers every \
                     tenant; use {MIN_STRONG_TOKEN} or more random characters"
                );
            }
            if let Ok(Some(stored)) = read_private(&path) {
                if stored.trim() != t && !stored.trim().is_empty() {
                    tracing::warn!(
                        file = %path.display(),
                        "TOLLGATE_ADMIN_TOKEN is set: it replaces the token stored in the \
                         file, which does not work while the variable is set"
                    );
                }
            }
            return Ok((AdminToken::new(t), None));
        }
        if let Some(existing) = read_private(&path)? {
            let t = existing.trim();
            if !t.is_empty() {
                return Ok((AdminToken::new(t), Some(path)));
            }
            std::fs::remove_file(&path)?;
        }
        let token = random_token("tga_", 40);
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600).custom_flags(libc::O_NOFOLLOW);
        }
        let mut f = opts.open(&path)?;
        writeln!(f, "{token}")?;
        f.sync_all()?;
        Ok((AdminToken::new(&token), Some(path)))
    }
}

/// The admin-token file's text, if it exists and only its owner can read it.
fn read_private(path: &Path) -> std::io::Result<Option<String>> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let refuse = |why: String| std::io::Error::new(std::io::ErrorKind::PermissionDenied, why);
    if meta.file_type().is_symlink() {
        return Err(refuse(format!(
            "{} is a symbolic link; refusing to follow it (replace it with the token file itself)",
            path.display()
        )));
    }
    if !meta.is_file() {
        return Err(refuse(format!("{} is not a file", path.display())));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(refuse(format!(
                "{} is readable by other users (mode {mode:04o}); run chmod 600 on it, \
                 or delete it to have a new token made",
                path.display()
            )));
        }
    }
    std::fs::read_to_string(path).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_one_block_hash_is_sha256() {
        // Every length around the one-block edge, and the known digest.
        let text: String = (0..130).map(|i| BASE62[i % 62] as char).collect();
        for n in 0..=text.len() {
            let s = &text[..n];
            assert_eq!(KeyHash::of(s).0, <[u8; 32]>::from(Sha256::digest(s)), "{n}");
        }
        let abc = KeyHash::of("abc").0;
        let hex: String = abc.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

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

    /// Regression (hostile tenant, finding 8): an `admin-token` of mode 0644
    /// was used silently (while the banner said 0600), and a symlinked one
    /// was followed and overwritten.
    #[cfg(unix)]
    #[test]
    fn a_readable_or_symlinked_token_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin-token");
        std::fs::write(&path, "tga_shared\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = AdminToken::load_or_create(None, dir.path()).err().unwrap();
        assert!(
            e.to_string()
                .contains("readable by other users (mode 0644)"),
            "{e}"
        );
        std::fs::remove_file(&path).unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "precious").unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let e = AdminToken::load_or_create(None, dir.path()).err().unwrap();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
    }
}

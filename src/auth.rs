//! Tokens, nonces and the HMAC-SHA256 challenge–response. The token never crosses the wire.

use anyhow::{Context, Result, bail};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::path::Path;

type HmacSha256 = Hmac<Sha256>;

/// Shortest token a token file may hold.
pub const MIN_TOKEN_BYTES: usize = 16;

/// A shared secret: the token file's content with surrounding whitespace trimmed.
#[derive(Clone)]
pub struct Token(Vec<u8>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// A token from its text (whitespace around it is not part of it).
    pub fn new(text: &str) -> Result<Token> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            bail!("the token is empty");
        }
        Ok(Token(trimmed.as_bytes().to_vec()))
    }

    /// Reads a token file; a token shorter than [`MIN_TOKEN_BYTES`] is refused, since it could be guessed.
    pub fn read(path: &Path) -> Result<Token> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read token file {}", path.display()))?;
        let token = Token::new(&text).with_context(|| format!("token file {}", path.display()))?;
        if token.0.len() < MIN_TOKEN_BYTES {
            bail!(
                "the token in {} is {} bytes: use at least {MIN_TOKEN_BYTES} (`touchwire init` writes 64 random hex digits)",
                path.display(),
                token.0.len()
            );
        }
        Ok(token)
    }

    /// The MAC a client sends for `nonce`: lowercase hex of HMAC-SHA256(token, nonce).
    pub fn mac(&self, nonce: &str) -> String {
        hex::encode(self.hmac(nonce).finalize().into_bytes())
    }

    /// Checks a client's MAC for `nonce` in constant time.
    pub fn verify(&self, nonce: &str, mac_hex: &str) -> bool {
        match hex::decode(mac_hex) {
            Ok(mac) => self.hmac(nonce).verify_slice(&mac).is_ok(),
            Err(_) => false,
        }
    }

    fn hmac(&self, nonce: &str) -> HmacSha256 {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(nonce.as_bytes());
        mac
    }
}

/// `bytes` random bytes from the OS, as lowercase hex.
pub fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|err| anyhow::anyhow!("no randomness from the OS: {err}"))?;
    Ok(hex::encode(buf))
}

/// A fresh nonce for a greeting: 32 lowercase hex digits.
pub fn nonce() -> Result<String> {
    random_hex(16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_matches_a_known_vector() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let token = Token::new("Jefe\n").unwrap();
        assert_eq!(
            token.mac("what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn verify_accepts_the_right_mac_only() {
        let token = Token::new("  secret  ").unwrap();
        let mac = token.mac("0123");
        assert!(token.verify("0123", &mac));
        assert!(!token.verify("0124", &mac));
        assert!(!Token::new("other").unwrap().verify("0123", &mac));
        assert!(!token.verify("0123", "not hex"));
        assert!(!token.verify("0123", ""));
    }

    #[test]
    fn empty_and_short_tokens_are_refused() {
        assert!(Token::new(" \n\t").is_err());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "short-token\n").unwrap();
        let err = format!("{:#}", Token::read(&file).unwrap_err());
        assert!(err.contains("11 bytes: use at least 16"), "{err}");
        std::fs::write(&file, "0123456789abcdef\n").unwrap();
        assert!(Token::read(&file).is_ok());
    }

    #[test]
    fn nonces_are_fresh_hex() {
        let (a, b) = (nonce().unwrap(), nonce().unwrap());
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
    }
}

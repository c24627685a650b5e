//! The bearer token: who may change things and read store values.

use std::path::Path;

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A bearer token, kept only as its SHA-256 so that comparing a presented token takes the
/// same time whatever it shares with the real one, its length included.
#[derive(Clone)]
pub struct Token([u8; 32]);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

/// Why a token file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// It cannot be read.
    #[error("cannot read token file {}: {source}", path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It holds nothing but whitespace: every request would carry the "token".
    #[error("token file {} is empty; put one token in it (e.g. `openssl rand -hex 32 > {}`)", path.display(), path.display())]
    Empty {
        /// The file.
        path: std::path::PathBuf,
    },
}

impl Token {
    /// The token in `path`: its text without surrounding whitespace (a trailing newline). A
    /// token under 16 characters is accepted with a warning: it is the operator's to choose,
    /// but a short one can be guessed.
    pub fn from_file(path: &Path) -> Result<Self, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(TokenError::Empty {
                path: path.to_path_buf(),
            });
        }
        if token.chars().count() < 16 {
            tracing::warn!(
                "the token in {} has under 16 characters and can be guessed; `openssl rand -hex 32` makes a strong one",
                path.display()
            );
        }
        Ok(Self::new(token))
    }

    /// A token from its text.
    pub fn new(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    /// Whether the request carries `Authorization: Bearer <this token>`.
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        let presented = headers
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim);
        match presented {
            Some(token) => {
                let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
                bool::from(digest.ct_eq(&self.0))
            }
            None => false,
        }
    }
}

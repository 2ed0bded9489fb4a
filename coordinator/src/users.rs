//! The people who may use a coordinator: its users file, their roles, their password hashes.
//!
//! The operator writes the file (`--users FILE`); one user per line, `name:hash:role`, where
//! `hash` is an Argon2id PHC string (`$argon2id$v=19$m=…`) as `floe passwd` prints it and
//! `role` is `admin`, `writer` or `reader`. Blank lines and lines starting with `#` are
//! ignored. Passwords are never stored; a wrong one costs the caller one Argon2 verification.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Everything a writer may, and the administrative actions.
    Admin,
    /// Queries, CTAS, INSERT and DDL.
    Writer,
    /// Queries only.
    Reader,
}

impl Role {
    /// Whether the role may change tables (INSERT, CTAS, DDL).
    pub fn may_write(self) -> bool {
        matches!(self, Role::Admin | Role::Writer)
    }

    /// The role's name in the users file.
    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Writer => "writer",
            Role::Reader => "reader",
        }
    }

    /// The role a users-file name stands for.
    pub fn parse(name: &str) -> Option<Role> {
        match name {
            "admin" => Some(Role::Admin),
            "writer" => Some(Role::Writer),
            "reader" => Some(Role::Reader),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One user of the file.
#[derive(Clone)]
struct User {
    hash: String,
    role: Role,
}

/// The users file, loaded.
#[derive(Clone, Default)]
pub struct Users {
    users: HashMap<String, User>,
}

impl fmt::Debug for Users {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Users")
            .field("names", &self.users.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Users {
    /// Reads and checks a users file; an error names the file and line.
    pub fn load(path: &Path) -> Result<Users, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the users file {}: {e}", path.display()))?;
        Users::parse(&text).map_err(|e| format!("users file {}: {e}", path.display()))
    }

    /// Parses the text of a users file.
    pub fn parse(text: &str) -> Result<Users, String> {
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let n = i + 1;
            let mut parts = line.split(':');
            let (Some(name), Some(hash), Some(role), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(format!("line {n}: expected name:hash:role"));
            };
            if name.is_empty() {
                return Err(format!("line {n}: empty user name"));
            }
            PasswordHash::new(hash).map_err(|e| {
                format!("line {n}: user {name:?}: not a password hash (use `floe passwd`): {e}")
            })?;
            let role = Role::parse(role).ok_or_else(|| {
                format!("line {n}: user {name:?}: unknown role {role:?} (admin, writer or reader)")
            })?;
            let user = User {
                hash: hash.to_string(),
                role,
            };
            if users.insert(name.to_string(), user).is_some() {
                return Err(format!("line {n}: user {name:?} appears twice"));
            }
        }
        if users.is_empty() {
            return Err("no users in it".into());
        }
        Ok(Users { users })
    }

    /// The role of `name` if `password` is theirs. Slow on purpose (Argon2): call it off the
    /// async runtime's threads.
    /// An unknown user costs one verification too (against a hash no password matches), so
    /// the answer's timing does not tell which user names exist.
    pub fn verify(&self, name: &str, password: &str) -> Option<Role> {
        let Some(user) = self.users.get(name) else {
            if let Ok(hash) = PasswordHash::new(&UNKNOWN_USER_HASH) {
                let _ = Argon2::default().verify_password(password.as_bytes(), &hash);
            }
            return None;
        };
        let hash = PasswordHash::new(&user.hash).ok()?;
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .ok()
            .map(|()| user.role)
    }
}

/// An Argon2id hash (default parameters, as `floe passwd` writes) of a random password that
/// is then forgotten.
static UNKNOWN_USER_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).expect("16 bytes encode");
    Argon2::default()
        .hash_password(&rand::random::<[u8; 32]>(), &salt)
        .expect("hashing works")
        .to_string()
});

/// A users-file line for `name` with `password` and `role` (Argon2id, random salt).
pub fn users_file_line(name: &str, password: &str, role: Role) -> Result<String, String> {
    if name.is_empty() || name.contains(':') || name.contains(char::is_whitespace) {
        return Err(format!("invalid user name {name:?} (no colons or spaces)"));
    }
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
        .map_err(|e| format!("cannot make a salt: {e}"))?;
    let hash = Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| format!("cannot hash the password: {e}"))?;
    Ok(format!("{name}:{hash}:{role}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_line_verifies_its_password_only() {
        let text = format!(
            "# analysts\n{}\n\n{}\n",
            users_file_line("alice", "s3cret pass", Role::Reader).expect("line"),
            users_file_line("bob", "hunter2", Role::Writer).expect("line"),
        );
        let users = Users::parse(&text).expect("parse");
        assert_eq!(users.verify("alice", "s3cret pass"), Some(Role::Reader));
        assert_eq!(users.verify("bob", "hunter2"), Some(Role::Writer));
        assert_eq!(users.verify("alice", "hunter2"), None);
        assert_eq!(users.verify("carol", "hunter2"), None);
        assert_eq!(users.verify("alice", ""), None);
    }

    #[test]
    fn a_bad_file_names_the_line() {
        let good = users_file_line("a", "p", Role::Admin).expect("line");
        for (text, want) in [
            ("alice:plain:reader", "line 1"),
            ("# x\nalice", "line 2: expected name:hash:role"),
            (&format!("{good}\n{good}"), "appears twice"),
            (&good.replace(":admin", ":root"), "unknown role"),
            ("# nobody\n", "no users"),
        ] {
            let err = Users::parse(text).expect_err(text);
            assert!(err.contains(want), "{text:?}: {err}");
        }
        assert!(users_file_line("a:b", "p", Role::Admin).is_err());
    }
}

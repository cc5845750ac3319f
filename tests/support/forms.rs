//! Token request forms for table-driven tests: a form is a list of (parameter, value)
//! pairs, built from a base (impersonation, delegation) and edited per row.

use super::{AT, GRANT};

/// A token request body as (parameter, value) pairs, in order.
pub type Form = Vec<(&'static str, String)>;

/// An impersonation form: the subject token only.
pub fn imp(subject: &str) -> Form {
    vec![
        ("grant_type", GRANT.to_owned()),
        ("subject_token", subject.to_owned()),
        ("subject_token_type", AT.to_owned()),
    ]
}

/// A delegation form: subject and actor tokens, both declared access tokens.
pub fn del(subject: &str, actor: &str) -> Form {
    imp(subject)
        .with("actor_token", actor)
        .with("actor_token_type", AT)
}

/// Editing a form.
pub trait Edit {
    /// Adds a parameter (repeating it if present).
    fn with(self, name: &'static str, value: &str) -> Self;
    /// Sets a parameter's only value.
    fn set(self, name: &'static str, value: &str) -> Self;
    /// Removes a parameter.
    fn without(self, name: &str) -> Self;
}

impl Edit for Form {
    fn with(mut self, name: &'static str, value: &str) -> Self {
        self.push((name, value.to_owned()));
        self
    }
    fn set(self, name: &'static str, value: &str) -> Self {
        self.without(name).with(name, value)
    }
    fn without(mut self, name: &str) -> Self {
        self.retain(|(k, _)| *k != name);
        self
    }
}

//! Registration's rules: an email that is one (lower-cased: the login), a display name of
//! 1 to 100 characters, and a password the policy in [`crate::password`] accepts. Every
//! registered account starts as a customer.

use uuid::Uuid;

use crate::{error::Error, role::Role, store::accounts::User};

/// A registration that passed the rules; the password is hashed next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAccount {
    /// Lower-cased email.
    pub email: String,
    /// Trimmed display name.
    pub name: String,
}

impl NewAccount {
    /// Checks a registration; every field at fault is named in one [`Error::Invalid`], except
    /// that an email that is not one is refused before anything else is looked at.
    pub fn parse(email: &str, name: &str, password: &str) -> Result<Self, Error> {
        let email = normalize_email(email)?;
        let name = name.trim().to_owned();
        let mut invalid = Vec::new();
        if name.is_empty() || name.chars().count() > 100 {
            invalid.push(("name".to_owned(), "must be 1 to 100 characters".to_owned()));
        }
        invalid.extend(
            crate::password::violations(password, &email, &name)
                .into_iter()
                .map(|m| ("password".to_owned(), m)),
        );
        if invalid.is_empty() {
            Ok(Self { email, name })
        } else {
            Err(Error::Invalid(invalid))
        }
    }

    /// The account to store, with its password's hash: a customer.
    pub fn into_user(self, password_hash: String) -> User {
        User {
            id: Uuid::now_v7(),
            email: self.email,
            name: self.name,
            password_hash: Some(password_hash),
            roles: vec![Role::Customer],
            email_verified: false,
        }
    }
}

/// `email` trimmed and lower-cased, if it is an email address (one `@`, a dotted domain, no
/// white space, at most 254 characters).
pub fn normalize_email(email: &str) -> Result<String, Error> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        })
        && !email.chars().any(char::is_whitespace);
    if valid {
        Ok(email)
    } else {
        Err(Error::Invalid(vec![(
            "email".into(),
            "is not an email address".into(),
        )]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(error: Error) -> Vec<String> {
        match error {
            Error::Invalid(fields) => fields.into_iter().map(|(f, _)| f).collect(),
            other => panic!("not invalid: {other}"),
        }
    }

    #[test]
    fn an_email_is_trimmed_and_lower_cased() {
        assert_eq!(
            normalize_email("  Ada@Example.COM ").unwrap(),
            "ada@example.com"
        );
    }

    #[test]
    fn what_is_not_an_email_is_refused() {
        for bad in [
            "ada",
            "@example.com",
            "ada@example",
            "ada@.com",
            "a da@x.com",
        ] {
            assert_eq!(
                fields(normalize_email(bad).unwrap_err()),
                ["email"],
                "{bad}"
            );
        }
    }

    #[test]
    fn a_registration_names_every_field_at_fault() {
        let error = NewAccount::parse("ada@example.com", " ", "short").unwrap_err();

        assert_eq!(fields(error), ["name", "password"]);
    }

    #[test]
    fn a_valid_registration_becomes_a_customer() {
        let new =
            NewAccount::parse(" Ada@Example.com", " Ada ", "correct horse battery staple").unwrap();
        let user = new.clone().into_user("hash".into());

        assert_eq!(
            new,
            NewAccount {
                email: "ada@example.com".into(),
                name: "Ada".into()
            }
        );
        assert_eq!(user.roles, [Role::Customer]);
        assert_eq!(user.password_hash.as_deref(), Some("hash"));
    }
}

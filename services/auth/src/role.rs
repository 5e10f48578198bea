//! The roles an account holds, and the scopes each grants. Stored as text (`users.roles` is
//! `text[]`), sent as lower-case strings in tokens, events and responses.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A role. Declared in alphabetical order, so a sorted set reads as its names sorted.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    ToSchema,
    sqlx::Type,
)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum Role {
    /// Runs the shop: catalog, users, operations.
    Admin,
    /// Buys: every registered account starts with it.
    Customer,
    /// Helps customers: reads their orders and accounts.
    Support,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 3] = [Role::Admin, Role::Customer, Role::Support];

    /// Its name: `admin`, `customer`, `support`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Customer => "customer",
            Role::Support => "support",
        }
    }

    /// The permissions it grants, as words of the `scope` claim.
    pub fn scopes(self) -> &'static [&'static str] {
        match self {
            Role::Customer => &["profile", "orders"],
            Role::Support => &["profile", "orders:read", "users:read"],
            Role::Admin => &[
                "profile",
                "orders:read",
                "users:read",
                "users:write",
                "catalog:write",
                "admin",
            ],
        }
    }

    /// The names of `roles`, for events and other places that carry plain strings.
    pub fn names(roles: &[Role]) -> Vec<String> {
        roles.iter().map(|role| role.as_str().to_owned()).collect()
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == name)
            .ok_or_else(|| format!("{name:?} is not one of customer, support, admin"))
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_reads_back_from_its_name_and_serializes_as_it() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
            assert_eq!(
                serde_json::to_value(role).unwrap(),
                serde_json::json!(role.as_str())
            );
        }
    }

    #[test]
    fn an_unknown_role_is_refused_with_the_ones_there_are() {
        assert_eq!(
            "owner".parse::<Role>(),
            Err("\"owner\" is not one of customer, support, admin".to_owned())
        );
    }

    #[test]
    fn sorted_roles_read_in_alphabetical_order() {
        let mut roles = vec![Role::Support, Role::Customer, Role::Admin];
        roles.sort();
        assert_eq!(Role::names(&roles), ["admin", "customer", "support"]);
    }
}

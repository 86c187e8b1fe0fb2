//! Who the billable is and who may change its billing, from the verified token's claims:
//!
//! | variable                | unset                              | set                                         |
//! |-------------------------|------------------------------------|---------------------------------------------|
//! | `BILLING_ACCOUNT_CLAIM` | the account is the `sub` claim     | the account is this claim (`org_id`); a token without it is refused (403) |
//! | `BILLING_ROLE_CLAIM`    | every member may change billing    | only a role in `BILLING_ADMIN_ROLES` may    |
//! | `BILLING_ADMIN_ROLES`   | (required with the role claim)     | comma-separated roles, e.g. `admin,owner`   |
//!
//! Membership stays in the identity provider: an account here is only a key.

use std::collections::BTreeSet;

use super::{ConfigError, Env, invalid};

/// The claim that names the account when `BILLING_ACCOUNT_CLAIM` is unset.
pub const DEFAULT_ACCOUNT_CLAIM: &str = "sub";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSettings {
    /// The claim whose value is the account id.
    pub account_claim: String,
    /// Who may change billing; `None` lets every member.
    pub admins: Option<AdminRoles>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminRoles {
    pub claim: String,
    pub roles: BTreeSet<String>,
}

impl Default for AccountSettings {
    fn default() -> Self {
        Self {
            account_claim: DEFAULT_ACCOUNT_CLAIM.to_owned(),
            admins: None,
        }
    }
}

/// A claim name as the authorizer passes it on: a top-level JWT claim.
fn claim_name(var: &'static str, raw: &str) -> Result<String, ConfigError> {
    let name = raw.trim();
    if name.is_empty() || name.len() > 128 || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(var, "expected the name of a top-level JWT claim, e.g. org_id"));
    }
    Ok(name.to_owned())
}

impl AccountSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let account_claim = match env.get("BILLING_ACCOUNT_CLAIM") {
            Some(raw) => claim_name("BILLING_ACCOUNT_CLAIM", raw)?,
            None => DEFAULT_ACCOUNT_CLAIM.to_owned(),
        };
        let admins = match (env.get("BILLING_ROLE_CLAIM"), env.get("BILLING_ADMIN_ROLES")) {
            (None, None) => None,
            (Some(_), None) => return Err(ConfigError::Missing("BILLING_ADMIN_ROLES")),
            (None, Some(_)) => {
                return Err(invalid(
                    "BILLING_ADMIN_ROLES",
                    "set BILLING_ROLE_CLAIM too: the claim the roles are read from",
                ));
            }
            (Some(claim), Some(roles)) => {
                let roles: BTreeSet<String> = roles
                    .split(',')
                    .map(str::trim)
                    .filter(|role| !role.is_empty())
                    .map(str::to_owned)
                    .collect();
                if roles.is_empty() {
                    return Err(invalid(
                        "BILLING_ADMIN_ROLES",
                        "expected comma-separated roles, e.g. admin,owner",
                    ));
                }
                Some(AdminRoles {
                    claim: claim_name("BILLING_ROLE_CLAIM", claim)?,
                    roles,
                })
            }
        };
        Ok(Self { account_claim, admins })
    }

    /// Whether a caller whose role claim reads `role` (absent: `None`) may change billing.
    pub fn may_manage(&self, role: Option<&str>) -> bool {
        let Some(admins) = &self.admins else {
            return true;
        };
        role.is_some_and(|value| roles_in(value).any(|role| admins.roles.contains(role)))
    }
}

/// The roles a claim value holds. API Gateway's HTTP API passes every claim as a string; an
/// array claim arrives as `[a b]` (or as JSON text, `["a","b"]`, from other front ends), so
/// both are read as lists. A plain string is one role.
fn roles_in(value: &str) -> impl Iterator<Item = &str> {
    let trimmed = value.trim();
    let list = trimmed.strip_prefix('[').and_then(|rest| rest.strip_suffix(']'));
    let (body, separators): (&str, &[char]) = match list {
        Some(inner) => (inner, &[' ', ',']),
        None => (trimmed, &[]),
    };
    body.split(move |c: char| separators.contains(&c))
        .map(|role| role.trim().trim_matches('"'))
        .filter(|role| !role.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<AccountSettings, ConfigError> {
        AccountSettings::from_env(&Env::from_pairs(pairs.iter().copied()))
    }

    #[test]
    fn the_default_is_one_person_accounts_where_everyone_manages() {
        let default = settings(&[]).unwrap();
        assert_eq!(default, AccountSettings::default());
        assert_eq!(default.account_claim, "sub");
        assert!(default.may_manage(None));
    }

    #[test]
    fn roles_are_read_from_strings_and_lists() {
        let settings = settings(&[
            ("BILLING_ACCOUNT_CLAIM", "org_id"),
            ("BILLING_ROLE_CLAIM", "org_role"),
            ("BILLING_ADMIN_ROLES", "admin, owner,"),
        ])
        .unwrap();
        assert_eq!(settings.account_claim, "org_id");
        for (role, may) in [
            (Some("admin"), true),
            (Some("owner"), true),
            (Some("member"), false),
            (Some("[member owner]"), true),
            (Some(r#"["member","admin"]"#), true),
            (Some("[member]"), false),
            (Some("administrator"), false),
            (Some("admin owner"), false),
            (Some(""), false),
            (None, false),
        ] {
            assert_eq!(settings.may_manage(role), may, "{role:?}");
        }
    }

    #[test]
    fn half_a_role_policy_is_refused_by_name() {
        let error = settings(&[("BILLING_ROLE_CLAIM", "org_role")]).unwrap_err().to_string();
        assert!(error.contains("BILLING_ADMIN_ROLES"), "{error}");
        let error = settings(&[("BILLING_ADMIN_ROLES", "admin")]).unwrap_err().to_string();
        assert!(error.contains("BILLING_ROLE_CLAIM"), "{error}");
        let error = settings(&[("BILLING_ROLE_CLAIM", "org_role"), ("BILLING_ADMIN_ROLES", " , ")])
            .unwrap_err()
            .to_string();
        assert!(error.contains("BILLING_ADMIN_ROLES"), "{error}");
        let error = settings(&[("BILLING_ACCOUNT_CLAIM", "org id")])
            .unwrap_err()
            .to_string();
        assert!(error.contains("BILLING_ACCOUNT_CLAIM"), "{error}");
    }
}

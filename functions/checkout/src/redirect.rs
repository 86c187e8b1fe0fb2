//! Paths the client may choose for Stripe's success/cancel/return redirects. The origin is
//! always `APP_BASE_URL`; a path that could leave it is refused, not repaired.

use url::Url;

/// A same-origin path like `/billing/done?tab=plans`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafePath(String);

impl SafePath {
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || "/-_.~?=&".contains(c);
        if raw.len() > 512 {
            return Err("path is too long");
        }
        if !raw.starts_with('/') || raw.starts_with("//") {
            return Err("path must start with a single '/'");
        }
        // No `%` (no encoded slashes, backslashes or controls), no `\`, `:`, `@`, `#` or
        // whitespace: nothing a browser might read as another origin.
        if !raw.chars().all(allowed) {
            return Err("path may only contain letters, digits and / - _ . ~ ? = &");
        }
        if raw.split(['/', '?']).any(|segment| segment == "..") {
            return Err("path may not contain '..'");
        }
        Ok(Self(raw.to_owned()))
    }

    /// The absolute URL on `base`; the origin check is repeated on the result.
    pub fn on(&self, base: &Url) -> Result<Url, &'static str> {
        let mut joined = base.clone();
        let prefix = base.path().trim_end_matches('/');
        let (path, query) = self
            .0
            .split_once('?')
            .map_or((self.0.as_str(), None), |(p, q)| (p, Some(q)));
        joined.set_path(&format!("{prefix}{path}"));
        joined.set_query(query);
        if joined.origin() == base.origin() {
            Ok(joined)
        } else {
            Err("path leaves the application's origin")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_origin_paths_are_kept() {
        let base = Url::parse("https://app.example.com").unwrap();
        let url = SafePath::parse("/billing/done?tab=plans").unwrap().on(&base).unwrap();
        assert_eq!(url.as_str(), "https://app.example.com/billing/done?tab=plans");
        let prefixed = Url::parse("https://example.com/app/").unwrap();
        assert_eq!(
            SafePath::parse("/billing").unwrap().on(&prefixed).unwrap().as_str(),
            "https://example.com/app/billing"
        );
    }

    #[test]
    fn anything_that_could_leave_the_origin_is_refused() {
        for bad in [
            "https://evil.example",
            "//evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "/%2F%2Fevil.example",
            "/%5Cevil",
            "/a/../../x",
            "/ok#frag",
            "/user@evil",
            "javascript:alert(1)",
            "/a b",
            "/tab\t",
            "",
            "relative/path",
            "/ünïcode",
        ] {
            assert!(SafePath::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}

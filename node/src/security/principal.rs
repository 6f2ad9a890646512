//! Who is on the other end of a connection: Kafka's `KafkaPrincipal` (type `User`),
//! what ACLs will be checked against. PLAINTEXT and TLS without a client certificate
//! give `User:ANONYMOUS`; mTLS gives the certificate subject mapped by
//! `ssl.principal.mapping.rules`; SASL gives the authenticated user name.

use std::fmt;

use anyhow::{bail, Context};
use x509_parser::prelude::{FromDer, X509Certificate};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Kafka's principal type; `User` for every authenticator Spate has.
    pub kind: &'static str,
    pub name: String,
}

impl Principal {
    pub fn anonymous() -> Principal {
        Principal::user("ANONYMOUS")
    }

    pub fn user(name: &str) -> Principal {
        Principal {
            kind: "User",
            name: name.to_string(),
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.name)
    }
}

/// The subject of a DER certificate as Java's `X500Principal.getName()` writes it
/// (RFC 2253: last RDN first, `,` between them, `+` inside multi-valued ones, in
/// their encoded order), which
/// is what Kafka's mapping rules are written against. One difference: attributes
/// without an RFC 2253 keyword (emailAddress, ...) are written `OID=value` where Java
/// writes `OID=#` and the value's DER in hex.
pub fn subject_dn(der: &[u8]) -> anyhow::Result<String> {
    Ok(subject_rdns(der)?.join(","))
}

/// The RDNs of a DER certificate's subject, last first, each as `subject_dn` writes it.
pub fn subject_rdns(der: &[u8]) -> anyhow::Result<Vec<String>> {
    let (_, cert) = X509Certificate::from_der(der).context("parsing the certificate")?;
    let mut rdns = Vec::new();
    for rdn in cert.subject().iter() {
        let mut parts = Vec::new();
        for atv in rdn.iter() {
            let oid = atv.attr_type().to_id_string();
            let key = rfc2253_keyword(&oid).unwrap_or(&oid);
            let value = atv
                .as_str()
                .with_context(|| format!("certificate subject attribute {key} is not a string"))?;
            parts.push(format!("{key}={}", escape(value)));
        }
        rdns.push(parts.join("+"));
    }
    rdns.reverse();
    Ok(rdns)
}

/// The attribute keywords of RFC 2253 (the ones Java writes by name).
fn rfc2253_keyword(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "STREET",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "0.9.2342.19200300.100.1.1" => "UID",
        "0.9.2342.19200300.100.1.25" => "DC",
        _ => return None,
    })
}

/// RFC 2253 escaping of an attribute value.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One rule of `ssl.principal.mapping.rules`.
#[derive(Debug)]
enum Rule {
    Default,
    Replace {
        /// The pattern anchored at both ends: a rule applies only to a whole match.
        whole: regex_lite::Regex,
        pattern: regex_lite::Regex,
        replacement: String,
        case: Option<char>,
    },
}

/// Kafka's `SslPrincipalMapper`: the first rule that applies names the principal.
#[derive(Debug)]
pub struct PrincipalMapper(Vec<Rule>);

impl PrincipalMapper {
    /// `DEFAULT`, `RULE:pattern/replacement/[LU]`, comma-separated.
    pub fn parse(rules: &str) -> anyhow::Result<PrincipalMapper> {
        let mut out = Vec::new();
        let mut rest = rules.trim();
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix("DEFAULT") {
                out.push(Rule::Default);
                rest = after;
            } else if let Some(after) = rest.strip_prefix("RULE:") {
                let (pattern, after) =
                    until_slash(after).with_context(|| format!("bad rule {rest}"))?;
                let (replacement, after) =
                    until_slash(after).with_context(|| format!("bad rule {rest}"))?;
                let (case, after) = match after.chars().next() {
                    Some(c @ ('L' | 'U')) => (Some(c), &after[1..]),
                    _ => (None, after),
                };
                let compile = |p: &str| {
                    regex_lite::Regex::new(p).with_context(|| format!("bad pattern in rule {rest}"))
                };
                out.push(Rule::Replace {
                    whole: compile(&format!("^(?:{pattern})$"))?,
                    pattern: compile(&pattern)?,
                    replacement: java_replacement(&replacement),
                    case,
                });
                rest = after;
            } else {
                bail!("invalid ssl.principal.mapping.rules entry: {rest}");
            }
            rest = rest.trim_start();
            rest = match rest.strip_prefix(',') {
                Some(r) => r.trim_start(),
                None if rest.is_empty() => rest,
                None => bail!("invalid ssl.principal.mapping.rules: unexpected {rest}"),
            };
        }
        Ok(PrincipalMapper(out))
    }

    /// The principal name for a certificate subject; `None` when no rule applies
    /// (Kafka refuses the connection then).
    pub fn name(&self, dn: &str) -> Option<String> {
        self.0.iter().find_map(|rule| match rule {
            Rule::Default => Some(dn.to_string()),
            Rule::Replace {
                whole,
                pattern,
                replacement,
                case,
            } => {
                if !whole.is_match(dn) {
                    return None;
                }
                let name = pattern.replace_all(dn, replacement.as_str()).into_owned();
                Some(match case {
                    Some('L') => name.to_lowercase(),
                    Some('U') => name.to_uppercase(),
                    _ => name,
                })
            }
        })
    }
}

/// Up to the next unescaped `/`: (text with `\/` unescaped, the rest after the `/`).
fn until_slash(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                let (_, next) = chars.next()?;
                if next != '/' {
                    out.push('\\');
                }
                out.push(next);
            }
            '/' => return Some((out, &s[i + 1..])),
            c => out.push(c),
        }
    }
    None
}

/// Java's `$1` back references as the regex crate writes them (`${1}`), so that a
/// letter after the digits is not read as part of a group name.
fn java_replacement(r: &str) -> String {
    let mut out = String::with_capacity(r.len() + 4);
    let mut chars = r.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push_str("${");
            while let Some(d) = chars.next_if(char::is_ascii_digit) {
                out.push(d);
            }
            out.push('}');
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;

    #[test]
    fn default_keeps_the_distinguished_name() {
        let m = PrincipalMapper::parse("DEFAULT").unwrap();
        assert_eq!(m.name("CN=a,O=b").as_deref(), Some("CN=a,O=b"));
    }

    #[test]
    fn rules_as_kafka_documents_them() {
        let m = PrincipalMapper::parse(
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L, RULE:^CN=(.*?),OU=(.*?),O=.*$/$1@$2/U, DEFAULT",
        )
        .unwrap();
        assert_eq!(
            m.name("CN=Kafka-Svc,OU=ServiceUsers,O=x").as_deref(),
            Some("kafka-svc")
        );
        assert_eq!(m.name("CN=bob,OU=eng,O=x").as_deref(), Some("BOB@ENG"));
        assert_eq!(m.name("CN=x").as_deref(), Some("CN=x"));
        let only = PrincipalMapper::parse("RULE:^CN=(.*)$/$1/").unwrap();
        assert_eq!(only.name("O=nobody"), None);
        assert!(PrincipalMapper::parse("RULE:^CN=(.*)$").is_err());
        assert!(PrincipalMapper::parse("WHATEVER").is_err());
    }

    #[test]
    fn subject_as_java_writes_it() {
        let pem = include_bytes!("testdata/client.pem");
        let der = rustls::pki_types::CertificateDer::from_pem_slice(pem).unwrap();
        assert_eq!(
            subject_dn(&der).unwrap(),
            "1.2.840.113549.1.9.1=a@b.c,CN=client\\, with comma,OU=Unit+UID=u7,O=Spate Test,C=NL"
        );
        assert!(subject_dn(b"not a certificate").is_err());
    }

    #[test]
    fn escaping() {
        assert_eq!(escape("a,b"), "a\\,b");
        assert_eq!(escape(" x "), "\\ x\\ ");
        assert_eq!(java_replacement("$1@$2x"), "${1}@${2}x");
    }
}

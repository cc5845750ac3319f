//! Reading the few parts of an X.509 certificate (RFC 5280) gleipnir needs, with a small
//! DER walker: the leaf's not-after (the TLS certificate expiry metric), and for client
//! certificates (RFC 8705) the subject alternative names (URI, DNS), the subject DN as
//! RFC 4514 renders it, and the SHA-256 thumbprint (`x5t#S256`). A supporting module:
//! chain validation is rustls' (webpki), never done here.

/// `Certificate ::= SEQUENCE { tbsCertificate SEQUENCE {…}, … }`.
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
/// `subjectAltName` (2.5.29.17).
const OID_SAN: &[u8] = &[0x55, 0x1d, 0x11];

/// One DER element: (tag, contents, what follows). Single-byte tags, definite lengths.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let (bytes, rest) = rest.split_at_checked(n)?;
        let len = bytes
            .iter()
            .fold(0usize, |len, b| (len << 8) | usize::from(*b));
        (len, rest)
    };
    let (contents, rest) = rest.split_at_checked(len)?;
    Some((tag, contents, rest))
}

/// The elements of a constructed value's contents, in order (`None` if malformed).
fn elements(mut contents: &[u8]) -> Option<Vec<(u8, &[u8])>> {
    let mut out = Vec::new();
    while !contents.is_empty() {
        let (tag, value, rest) = der_element(contents)?;
        out.push((tag, value));
        contents = rest;
    }
    Some(out)
}

/// The fields of `tbsCertificate`, the optional `version [0]` skipped: serialNumber,
/// signature, issuer, validity, subject, subjectPublicKeyInfo, then the optional ones.
fn tbs_fields(der: &[u8]) -> Option<Vec<(u8, &[u8])>> {
    let (SEQUENCE, certificate, _) = der_element(der)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = der_element(certificate)? else {
        return None;
    };
    let mut fields = elements(tbs)?;
    if fields.first().is_some_and(|(tag, _)| *tag == 0xa0) {
        fields.remove(0);
    }
    Some(fields)
}

/// `tbsCertificate.validity.notAfter` of a DER certificate, in Unix seconds.
pub fn not_after(der: &[u8]) -> Option<i64> {
    let fields = tbs_fields(der)?;
    let expected = [0x02, SEQUENCE, SEQUENCE, SEQUENCE];
    for (i, tag) in expected.iter().enumerate() {
        if fields.get(i).map(|(t, _)| t) != Some(tag) {
            return None;
        }
    }
    let (_, validity) = fields.get(3)?;
    let (_, _, rest) = der_element(validity)?;
    let (tag, time, _) = der_element(rest)?;
    asn1_time(tag, time)
}

/// RFC 5280 §4.1.2.5: UTCTime `YYMMDDHHMMSSZ` (years 1950–2049) or GeneralizedTime
/// `YYYYMMDDHHMMSSZ`, in Unix seconds.
fn asn1_time(tag: u8, text: &[u8]) -> Option<i64> {
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        text.get(range)?.iter().try_fold(0i64, |n, &b| {
            b.is_ascii_digit().then(|| n * 10 + i64::from(b - b'0'))
        })
    };
    let (year, rest) = match (tag, text.len()) {
        (0x17, 13) => {
            let yy = digits(0..2)?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, 2)
        }
        (0x18, 15) => (digits(0..4)?, 4),
        _ => return None,
    };
    if text.last() != Some(&b'Z') {
        return None;
    }
    let field = |i: usize| digits(rest + 2 * i..rest + 2 * i + 2);
    let (month, day, hour, minute, second) =
        (field(0)?, field(1)?, field(2)?, field(3)?, field(4)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The names a client certificate carries (RFC 8705 §2.1.2 binds a client to one).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CertificateNames {
    /// URI subject alternative names (a SPIFFE ID, for instance).
    pub uris: Vec<String>,
    /// DNS subject alternative names.
    pub dns: Vec<String>,
    /// The subject DN, RFC 4514 string form.
    pub subject_dn: String,
}

/// The subject DN and subject alternative names of a DER certificate; `None` when it
/// is not a certificate this walker can read (then it binds no name).
pub fn names(der: &[u8]) -> Option<CertificateNames> {
    let fields = tbs_fields(der)?;
    let (SEQUENCE, subject) = *fields.get(4)? else {
        return None;
    };
    let mut names = CertificateNames {
        subject_dn: rfc4514(subject)?,
        ..CertificateNames::default()
    };
    let Some((_, extensions)) = fields.iter().find(|(tag, _)| *tag == 0xa3) else {
        return Some(names);
    };
    let (SEQUENCE, extensions, _) = der_element(extensions)? else {
        return None;
    };
    for (_, extension) in elements(extensions)? {
        let parts = elements(extension)?;
        let (Some((OID, oid)), Some((0x04, value))) = (parts.first(), parts.last()) else {
            return None;
        };
        if *oid != OID_SAN {
            continue;
        }
        let (SEQUENCE, general_names, _) = der_element(value)? else {
            return None;
        };
        for (tag, value) in elements(general_names)? {
            let text = || String::from_utf8(value.to_vec()).ok();
            match tag {
                0x82 => names.dns.push(text()?),
                0x86 => names.uris.push(text()?),
                _ => {}
            }
        }
    }
    Some(names)
}

/// The SHA-256 of a DER certificate (RFC 8705 §3.1 `x5t#S256`).
pub fn thumbprint(der: &[u8]) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    digest.as_ref().try_into().unwrap_or([0u8; 32])
}

/// RFC 4514 §2: a Name as a string, the last RDN first, RDNs separated by `,`, the
/// attributes of a multi-valued RDN by `+`, known types by their short names, others as
/// dotted OIDs with the value as `#` and hex.
fn rfc4514(name: &[u8]) -> Option<String> {
    let mut rdns = Vec::new();
    for (tag, rdn) in elements(name)? {
        if tag != SET {
            return None;
        }
        let mut attributes = Vec::new();
        for (tag, attribute) in elements(rdn)? {
            if tag != SEQUENCE {
                return None;
            }
            let parts = elements(attribute)?;
            let (Some((OID, oid)), Some((value_tag, value))) = (parts.first(), parts.get(1)) else {
                return None;
            };
            attributes.push(attribute_string(oid, *value_tag, value)?);
        }
        rdns.push(attributes.join("+"));
    }
    rdns.reverse();
    Some(rdns.join(","))
}

/// One `type=value` of RFC 4514 §2.3–§2.4.
fn attribute_string(oid: &[u8], tag: u8, value: &[u8]) -> Option<String> {
    let short = match oid {
        [0x55, 0x04, 0x03] => Some("CN"),
        [0x55, 0x04, 0x07] => Some("L"),
        [0x55, 0x04, 0x08] => Some("ST"),
        [0x55, 0x04, 0x0a] => Some("O"),
        [0x55, 0x04, 0x0b] => Some("OU"),
        [0x55, 0x04, 0x06] => Some("C"),
        [0x55, 0x04, 0x09] => Some("STREET"),
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19] => Some("DC"),
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01] => Some("UID"),
        _ => None,
    };
    // UTF8String, PrintableString, IA5String, TeletexString (read as Latin-1 would be
    // a guess: only its ASCII subset is taken).
    let text = match tag {
        0x0c | 0x13 | 0x16 | 0x14 => std::str::from_utf8(value).ok(),
        _ => None,
    };
    match (short, text) {
        (Some(short), Some(text)) => Some(format!("{short}={}", escape(text))),
        _ => {
            let hex: String = std::iter::once(tag)
                .chain(der_length(value.len()))
                .chain(value.iter().copied())
                .map(|b| format!("{b:02x}"))
                .collect();
            Some(format!("{}=#{hex}", dotted(oid)?))
        }
    }
}

/// A DER length's octets.
fn der_length(len: usize) -> Vec<u8> {
    if len < 0x80 {
        return vec![u8::try_from(len).unwrap_or(0)];
    }
    let bytes: Vec<u8> = len
        .to_be_bytes()
        .into_iter()
        .skip_while(|b| *b == 0)
        .collect();
    std::iter::once(0x80 | u8::try_from(bytes.len()).unwrap_or(0))
        .chain(bytes)
        .collect()
}

/// An OID's dotted form.
fn dotted(oid: &[u8]) -> Option<String> {
    let (&first, rest) = oid.split_first()?;
    let mut parts = vec![u64::from(first / 40), u64::from(first % 40)];
    let mut current = 0u64;
    for &b in rest {
        current = current.checked_mul(128)? | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            parts.push(current);
            current = 0;
        }
    }
    Some(
        parts
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join("."),
    )
}

/// RFC 4514 §2.4 escaping of an attribute value.
fn escape(value: &str) -> String {
    let last = value.chars().count().saturating_sub(1);
    let mut out = String::with_capacity(value.len());
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, '"' | '+' | ',' | ';' | '<' | '>' | '\\')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        if c == '\0' {
            out.push_str("\\00");
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_with_not_after(year: i32, month: u8, day: u8) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        params.not_after = rcgen::date_time_ymd(year, month, day);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn reads_the_not_after_of_real_certificates() {
        // UTCTime up to 2049, GeneralizedTime from 2050 (RFC 5280 §4.1.2.5).
        for (year, month, day, expected) in [
            (2031, 6, 15, 1_939_248_000),
            (2049, 12, 31, 2_524_521_600),
            (2050, 1, 1, 2_524_608_000),
            (2100, 3, 1, 4_107_542_400),
        ] {
            let der = cert_with_not_after(year, month, day);
            assert_eq!(not_after(&der), Some(expected), "{year}-{month}-{day}");
        }
    }

    #[test]
    fn times_and_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(asn1_time(0x17, b"991231235959Z"), Some(946_684_799));
        assert_eq!(asn1_time(0x17, b"500101000000Z"), Some(-631_152_000));
        assert_eq!(asn1_time(0x18, b"20300317174640Z"), Some(1_900_000_000));
        for (tag, bad) in [
            (0x17, &b"991231235959"[..]),
            (0x17, b"991331235959Z"),
            (0x17, b"99123123595aZ"),
            (0x18, b"991231235959Z"),
            (0x04, b"991231235959Z"),
        ] {
            assert_eq!(
                asn1_time(tag, bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn truncated_or_foreign_der_is_refused_not_misread() {
        let der = cert_with_not_after(2031, 6, 15);
        for len in [0, 1, 2, 10, 40, der.len() / 2] {
            assert_eq!(not_after(&der[..len]), None, "{len} bytes");
            assert_eq!(names(&der[..len]), None, "{len} bytes");
        }
        assert_eq!(not_after(b"not a certificate"), None);
        assert_eq!(not_after(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
    }

    #[test]
    fn names_of_a_real_client_certificate() {
        let mut params = rcgen::CertificateParams::new(vec!["gw.example.com".to_owned()]).unwrap();
        params.subject_alt_names.push(rcgen::SanType::URI(
            rcgen::string::Ia5String::try_from("spiffe://example.org/ns/shop/sa/gw").unwrap(),
        ));
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CountryName, "DE");
        dn.push(rcgen::DnType::OrganizationName, "Example, Inc.");
        dn.push(rcgen::DnType::CommonName, "gw");
        params.distinguished_name = dn;
        let key = rcgen::KeyPair::generate().unwrap();
        let der = params.self_signed(&key).unwrap().der().to_vec();
        let names = names(&der).unwrap();
        assert_eq!(names.dns, ["gw.example.com"]);
        assert_eq!(names.uris, ["spiffe://example.org/ns/shop/sa/gw"]);
        assert_eq!(names.subject_dn, "CN=gw,O=Example\\, Inc.,C=DE");
        assert_eq!(thumbprint(&der), thumbprint(&der));
        assert_ne!(thumbprint(&der), thumbprint(&der[1..]));
    }

    #[test]
    fn oids_and_escapes() {
        assert_eq!(
            dotted(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d]).unwrap(),
            "1.2.840.113549"
        );
        assert_eq!(escape(" #a+b "), "\\ #a\\+b\\ ");
        assert_eq!(der_length(5), [5]);
        assert_eq!(der_length(300), [0x82, 0x01, 0x2c]);
    }
}

//! The Redis / Valkey backend: the entries live in one Redis server (or a Valkey one; the
//! commands are the same), shared by every replica configured with the same URL and key
//! prefix. A supporting part of [`super`], with the same contract as the in-process store.
//!
//! # Time
//!
//! Every value is written as `<expires_at>:<length of the references>:<references><value>`,
//! and an entry is live while the store's [`Clock`] says `now < expires_at`, exactly as in
//! memory: two replicas, or a test with a manual clock, agree on expiry whatever Redis's
//! own clock says. Redis's expiry (`PX`, relative, the entry's remaining lifetime plus a
//! second) only reclaims the memory afterwards, so it depends on Redis's clock *rate*, not
//! on its wall time.
//!
//! # Atomicity and round trips
//!
//! `put`, `put_record`, `get`, `get_many` and `delete` are one command each (`SET … PX`,
//! `GET`, `MGET`, `GETDEL`). The calls that read and then write (`set_if_absent`,
//! `increment`, `admit`) and the one that reads a record and then its references
//! (`get_record`) are Lua scripts, which Redis runs atomically, in one round trip; the
//! scripts are sent by digest (`EVALSHA`) and loaded again when a restarted server
//! forgot them. The scripts read keys they compute (a record's references), so Redis
//! Cluster, which needs every key declared, is not supported.
//!
//! # Failures
//!
//! The connection is made on first use, not at start-up (a store down at start must not
//! stop the service, whose plain exchanges may not need it), and kept by redis-rs's
//! `ConnectionManager`, which reconnects after the server went away: no restart is
//! needed. Every call has a deadline (`store.timeout_ms`): past it the call is
//! [`StoreError::Timeout`]; a refused connection or a server error is
//! [`StoreError::Unavailable`]. What a caller does then is its own decision (see
//! `lifecycle` and `ratelimit`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands as _, Script, Value};

use super::{Admitted, Record, StoreError, Window};
use crate::clock::Clock;
use crate::config::Secret;
use crate::metrics::Metrics;

/// How to reach the server, resolved at start-up (secrets read from env or files).
pub struct RedisSettings {
    /// `redis://host:port/db` or `rediss://…` (TLS). May carry a password; never logged.
    pub url: Secret,
    /// A password that replaces the URL's (`AUTH`), when configured apart from it.
    pub password: Option<Secret>,
    /// PEM certificates to trust for `rediss://` instead of the system's roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Put before every key, so that deployments can share a server.
    pub key_prefix: String,
    /// Deadline of each call, connecting included.
    pub timeout: Duration,
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// A store in Redis or Valkey. Clones share the connection.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
    metrics: Option<Arc<Metrics>>,
}

struct Inner {
    client: redis::Client,
    connection: tokio::sync::OnceCell<ConnectionManager>,
    prefix: String,
    timeout: Duration,
    clock: Clock,
    scripts: Scripts,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: show the prefix only.
        f.debug_struct("RedisStore")
            .field("key_prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

/// Decodes a stored value (see the module docs) into its live payload and references.
const PARSE: &str = r"
local function parse(v, now)
  if not v then return nil end
  local a = string.find(v, ':', 1, true)
  if not a then return nil end
  local exp = string.sub(v, 1, a - 1)
  local e = tonumber(exp)
  if not e or e <= now then return nil end
  local b = string.find(v, ':', a + 1, true)
  if not b then return nil end
  local n = tonumber(string.sub(v, a + 1, b - 1))
  if not n then return nil end
  return string.sub(v, b + n + 1), string.sub(v, b + 1, b + n), exp
end
local now = tonumber(ARGV[1])
";

/// KEYS: key. ARGV: now, encoded value, ttl ms. 1 when stored.
const SET_IF_ABSENT: &str = r"
if parse(redis.call('GET', KEYS[1]), now) then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
";

/// KEYS: key. ARGV: now, expires_at, ttl ms. The new count, or -1: not a counter.
const INCREMENT: &str = r"
local p, refs, exp = parse(redis.call('GET', KEYS[1]), now)
if not p then
  redis.call('SET', KEYS[1], ARGV[2] .. ':0:1', 'PX', ARGV[3])
  return 1
end
if #refs > 0 or not string.match(p, '^%d+$') or #p > 15 then return -1 end
local n = tonumber(p) + 1
redis.call('SET', KEYS[1], exp .. ':0:' .. string.format('%d', n), 'KEEPTTL')
return n
";

/// KEYS: current, previous. ARGV: now, expires_at, ttl ms, limit, previous weight (‰).
/// {admitted, current, previous}, or -1: a counter is not one.
const ADMIT: &str = r"
local function count(k)
  local p, refs, exp = parse(redis.call('GET', k), now)
  if not p then return 0, nil end
  if #refs > 0 or not string.match(p, '^%d+$') or #p > 15 then return nil, nil end
  return tonumber(p), exp
end
local cur, exp = count(KEYS[1])
local prev = count(KEYS[2])
if not cur or not prev then return -1 end
if math.floor(prev * tonumber(ARGV[5]) / 1000) + cur >= tonumber(ARGV[4]) then
  return {0, cur, prev}
end
if exp then
  redis.call('SET', KEYS[1], exp .. ':0:' .. string.format('%d', cur + 1), 'KEEPTTL')
else
  redis.call('SET', KEYS[1], ARGV[2] .. ':0:1', 'PX', ARGV[3])
end
return {1, cur + 1, prev}
";

/// KEYS: key. ARGV: now. nil, or {value, references, raw value under each reference}.
const GET_RECORD: &str = r"
local p, refs = parse(redis.call('GET', KEYS[1]), now)
if not p then return nil end
local out = {p, refs}
if #refs > 0 then
  local keys = {}
  for k in string.gmatch(refs, '[^\n]+') do keys[#keys + 1] = k end
  local vals = redis.call('MGET', unpack(keys))
  for i = 1, #keys do out[#out + 1] = vals[i] end
end
return out
";

struct Scripts {
    set_if_absent: Script,
    increment: Script,
    admit: Script,
    get_record: Script,
}

impl Scripts {
    fn new() -> Self {
        let script = |body: &str| Script::new(&format!("{PARSE}{body}"));
        Scripts {
            set_if_absent: script(SET_IF_ABSENT),
            increment: script(INCREMENT),
            admit: script(ADMIT),
            get_record: script(GET_RECORD),
        }
    }
}

/// A stored value: `<expires_at>:<refs length>:<refs><value>`.
fn encode(expires_at: u64, refs: &str, value: &[u8]) -> Vec<u8> {
    let head = format!("{expires_at}:{}:", refs.len());
    let mut out = Vec::with_capacity(head.len() + refs.len() + value.len());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(refs.as_bytes());
    out.extend_from_slice(value);
    out
}

/// The live (`now < expires_at`) payload and references of a stored value.
fn decode(raw: &[u8], now: u64) -> Option<(Bytes, &[u8])> {
    let mut parts = raw.splitn(3, |&b| b == b':');
    let expires_at: u64 = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let refs_len: usize = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let rest = parts.next()?;
    if expires_at <= now || refs_len > rest.len() {
        return None;
    }
    let (refs, value) = rest.split_at(refs_len);
    Some((Bytes::copy_from_slice(value), refs))
}

/// Milliseconds Redis keeps an entry: its remaining life on our clock, plus a second so
/// that our clock, not Redis's, decides when it is gone.
fn ttl_ms(expires_at: u64, now: u64) -> u64 {
    expires_at
        .saturating_sub(now)
        .saturating_add(1)
        .saturating_mul(1000)
}

fn unavailable(e: &redis::RedisError) -> StoreError {
    tracing::debug!(kind = ?e.kind(), "store call failed");
    if e.is_timeout() {
        StoreError::Timeout
    } else {
        StoreError::Unavailable
    }
}

impl RedisStore {
    /// A store on the server `settings` names, expiring entries by `clock`. Connects on
    /// first use. Fails only on a malformed URL or certificate.
    pub fn new(settings: RedisSettings, clock: Clock) -> Result<Self, String> {
        let url = std::str::from_utf8(settings.url.expose())
            .map_err(|_| "the URL is not UTF-8".to_owned())?;
        let mut info: redis::ConnectionInfo = redis::IntoConnectionInfo::into_connection_info(url)
            // The error text could echo the URL, password included: say only what it is.
            .map_err(|_| "not a redis:// or rediss:// URL".to_owned())?;
        if let Some(password) = &settings.password {
            let password = std::str::from_utf8(password.expose())
                .map_err(|_| "the password is not UTF-8".to_owned())?;
            let redis = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(redis);
        }
        let client = match settings.ca_pem {
            Some(root_cert) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                },
            ),
            None => redis::Client::open(info),
        }
        .map_err(|e| format!("cannot use the server's settings: {:?}", e.kind()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                connection: tokio::sync::OnceCell::new(),
                prefix: settings.key_prefix,
                timeout: settings.timeout,
                clock,
                scripts: Scripts::new(),
            }),
            metrics: None,
        })
    }

    /// The same store, counting its calls in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub(super) fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.metrics.as_ref()
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.inner.prefix)
    }

    /// The connection, made now if it was not yet (or the last attempt failed).
    async fn connection(&self) -> Result<ConnectionManager, StoreError> {
        let inner = &self.inner;
        let connection = inner
            .connection
            .get_or_try_init(|| async {
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(inner.timeout))
                    .set_response_timeout(Some(inner.timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(inner.timeout);
                ConnectionManager::new_with_config(inner.client.clone(), config)
                    .await
                    .map_err(|e| unavailable(&e))
            })
            .await?;
        Ok(connection.clone())
    }

    /// Runs `call` on the connection within the deadline. A call that fails because the
    /// connection broke is made once more: the manager reconnects on that failure, so
    /// the first call after the server came back succeeds instead of failing. (Should
    /// the command have run before the connection broke, a counter counts twice and a
    /// `set_if_absent` answers `false`: the safe side for a rate limit and a replay
    /// cache.)
    async fn call<T, F>(&self, call: impl Fn(ConnectionManager) -> F) -> Result<T, StoreError>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        let work = async {
            let connection = self.connection().await?;
            match call(connection).await {
                Ok(value) => return Ok(value),
                Err(e) if !(e.is_io_error() || e.is_connection_dropped()) => {
                    return Err(unavailable(&e));
                }
                Err(_) => {}
            }
            let connection = self.connection().await?;
            call(connection).await.map_err(|e| unavailable(&e))
        };
        tokio::time::timeout(self.inner.timeout, work)
            .await
            .map_err(|_| StoreError::Timeout)?
    }

    /// Now on our clock, and `expires_at` checked to be after it.
    fn now_for(&self, expires_at: u64) -> Result<u64, StoreError> {
        let now = self.inner.clock.now();
        if expires_at <= now {
            return Err(StoreError::PastExpiry);
        }
        Ok(now)
    }

    /// See [`super::Store::put`].
    pub async fn put(&self, key: &str, value: Bytes, expires_at: u64) -> Result<(), StoreError> {
        self.put_record(key, value, &[], expires_at).await
    }

    /// See [`super::Store::put_record`].
    pub async fn put_record(
        &self,
        key: &str,
        value: Bytes,
        refs: &[String],
        expires_at: u64,
    ) -> Result<(), StoreError> {
        let now = self.now_for(expires_at)?;
        let refs: Vec<String> = refs.iter().map(|r| self.key(r)).collect();
        let stored = encode(expires_at, &refs.join("\n"), &value);
        let key = self.key(key);
        let options = redis::SetOptions::default()
            .with_expiration(redis::SetExpiry::PX(ttl_ms(expires_at, now)));
        let (key, stored) = (&key, &stored);
        self.call(move |mut c| {
            let options = options.clone();
            async move { c.set_options::<_, _, ()>(key, stored, options).await }
        })
        .await
    }

    /// See [`super::Store::get`].
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let key = self.key(key);
        let key = &key;
        let raw: Option<Vec<u8>> = self
            .call(move |mut c| async move { c.get(key).await })
            .await?;
        let now = self.inner.clock.now();
        Ok(raw.and_then(|raw| decode(&raw, now).map(|(value, _)| value)))
    }

    /// See [`super::Store::get_many`].
    pub async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        let keys = &keys;
        let raw: Vec<Option<Vec<u8>>> = self
            .call(move |mut c| async move { c.mget(keys).await })
            .await?;
        let now = self.inner.clock.now();
        Ok(raw
            .into_iter()
            .map(|raw| raw.and_then(|raw| decode(&raw, now).map(|(value, _)| value)))
            .collect())
    }

    /// See [`super::Store::delete`].
    pub async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let key = &self.key(key);
        let raw: Option<Vec<u8>> = self
            .call(move |mut c| async move { c.get_del(key).await })
            .await?;
        let now = self.inner.clock.now();
        Ok(raw.is_some_and(|raw| decode(&raw, now).is_some()))
    }

    /// See [`super::Store::set_if_absent`].
    pub async fn set_if_absent(
        &self,
        key: &str,
        value: Bytes,
        expires_at: u64,
    ) -> Result<bool, StoreError> {
        let now = self.now_for(expires_at)?;
        let mut invocation = self.inner.scripts.set_if_absent.key(self.key(key));
        invocation
            .arg(now)
            .arg(encode(expires_at, "", &value))
            .arg(ttl_ms(expires_at, now));
        let stored: i64 = self
            .call(|mut c| {
                let invocation = &invocation;
                async move { invocation.invoke_async(&mut c).await }
            })
            .await?;
        Ok(stored == 1)
    }

    /// See [`super::Store::increment`].
    pub async fn increment(&self, key: &str, expires_at: u64) -> Result<u64, StoreError> {
        let now = self.now_for(expires_at)?;
        let mut invocation = self.inner.scripts.increment.key(self.key(key));
        invocation
            .arg(now)
            .arg(expires_at)
            .arg(ttl_ms(expires_at, now));
        let count: i64 = self
            .call(|mut c| {
                let invocation = &invocation;
                async move { invocation.invoke_async(&mut c).await }
            })
            .await?;
        u64::try_from(count).map_err(|_| StoreError::NotACounter)
    }

    /// See [`super::Store::admit`].
    pub async fn admit(&self, window: &Window<'_>) -> Result<Admitted, StoreError> {
        let now = self.now_for(window.expires_at)?;
        let mut invocation = self.inner.scripts.admit.key(self.key(window.current));
        invocation
            .key(self.key(window.previous))
            .arg(now)
            .arg(window.expires_at)
            .arg(ttl_ms(window.expires_at, now))
            .arg(window.limit)
            .arg(window.previous_weight_milli);
        let answer: Value = self
            .call(|mut c| {
                let invocation = &invocation;
                async move { invocation.invoke_async(&mut c).await }
            })
            .await?;
        let number = |v: Option<&Value>| match v {
            Some(Value::Int(n)) => u64::try_from(*n).ok(),
            _ => None,
        };
        let Value::Array(items) = answer else {
            return Err(StoreError::NotACounter);
        };
        let mut items = items.iter();
        match (
            number(items.next()),
            number(items.next()),
            number(items.next()),
        ) {
            (Some(admitted), Some(current), Some(previous)) => Ok(Admitted {
                admitted: admitted == 1,
                current,
                previous,
            }),
            _ => Err(StoreError::Unavailable),
        }
    }

    /// See [`super::Store::get_record`].
    pub async fn get_record(&self, key: &str) -> Result<Option<Record>, StoreError> {
        let now = self.inner.clock.now();
        let mut invocation = self.inner.scripts.get_record.key(self.key(key));
        invocation.arg(now);
        let answer: Value = self
            .call(|mut c| {
                let invocation = &invocation;
                async move { invocation.invoke_async(&mut c).await }
            })
            .await?;
        let items = match answer {
            Value::Nil => return Ok(None),
            Value::Array(items) => items,
            _ => return Err(StoreError::Unavailable),
        };
        let mut items = items.into_iter();
        let (Some(Value::BulkString(value)), Some(Value::BulkString(refs))) =
            (items.next(), items.next())
        else {
            return Err(StoreError::Unavailable);
        };
        let refs = String::from_utf8(refs).map_err(|_| StoreError::Unavailable)?;
        let names = refs.split('\n').filter(|r| !r.is_empty());
        let refs = names
            .zip(items.chain(std::iter::repeat(Value::Nil)))
            .map(|(name, raw)| {
                let live = match raw {
                    Value::BulkString(raw) => decode(&raw, now).map(|(value, _)| value),
                    _ => None,
                };
                let name = name.strip_prefix(&self.inner.prefix).unwrap_or(name);
                (name.to_owned(), live)
            })
            .collect();
        Ok(Some(Record {
            value: Bytes::from(value),
            refs,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_decode_only_while_live() {
        let raw = encode(100, "a\nb", b"v:1");
        assert_eq!(
            decode(&raw, 99),
            Some((Bytes::from_static(b"v:1"), &b"a\nb"[..]))
        );
        assert_eq!(decode(&raw, 100), None);
        assert_eq!(decode(b"garbage", 1), None);
        assert_eq!(decode(b"100:9:ab", 1), None);
        assert_eq!(ttl_ms(110, 100), 11_000);
    }
}

//! Counters in Redis, shared by every gateway node. A reservation is one Lua script: it checks
//! every counter and increases them all only if all fit, atomically on the server, so
//! concurrent requests on any number of nodes cannot overrun a limit. The connection manager
//! reconnects by itself after Redis restarts or the network blips.

use redis::aio::ConnectionManager;
use tokio::sync::OnceCell;

use super::{Counter, Outcome, StoreError, now_ms};
use crate::config::RedisConfig;

/// KEYS: the counters. ARGV: amount, max, ttl (ms) for each. Returns {0, values...} when all
/// fit (and are increased), {i, current values...} when counter i (1-based) does not.
const RESERVE: &str = r"
local n = #KEYS
local current = {}
local refused = 0
for i = 1, n do
  current[i] = tonumber(redis.call('GET', KEYS[i]) or '0')
  if refused == 0 and current[i] + tonumber(ARGV[3 * i - 2]) > tonumber(ARGV[3 * i - 1]) then
    refused = i
  end
end
if refused > 0 then
  local out = {refused}
  for i = 1, n do out[i + 1] = current[i] end
  return out
end
local out = {0}
for i = 1, n do
  out[i + 1] = redis.call('INCRBY', KEYS[i], ARGV[3 * i - 2])
  redis.call('PEXPIRE', KEYS[i], ARGV[3 * i])
end
return out
";

/// KEYS: counters; ARGV: a signed delta for each. Windows that are gone stay gone.
const ADJUST: &str = r"
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    if redis.call('INCRBY', KEYS[i], ARGV[i]) < 0 then
      redis.call('SET', KEYS[i], 0, 'KEEPTTL')
    end
  end
end
return 0
";

#[derive(Debug)]
pub struct RedisStore {
    config: RedisConfig,
    client: redis::Client,
    /// Connected on first use, so the gateway starts while Redis is down.
    connection: OnceCell<ConnectionManager>,
    reserve: redis::Script,
    adjust: redis::Script,
    errors: std::sync::atomic::AtomicU64,
}

impl RedisStore {
    pub fn new(config: &RedisConfig) -> Result<Self, String> {
        let client =
            redis::Client::open(config.url.as_str()).map_err(|e| format!("bad Redis URL: {e}"))?;
        Ok(Self {
            config: config.clone(),
            client,
            connection: OnceCell::new(),
            reserve: redis::Script::new(RESERVE),
            adjust: redis::Script::new(ADJUST),
            errors: std::sync::atomic::AtomicU64::new(0),
        })
    }

    pub fn errors(&self) -> u64 {
        self.errors.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn count<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if result.is_err() {
            self.errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        result
    }

    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    async fn connection(&self) -> Result<ConnectionManager, StoreError> {
        let connect = || async {
            let config = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(self.config.timeout))
                .set_response_timeout(Some(self.config.timeout));
            ConnectionManager::new_with_config(self.client.clone(), config).await
        };
        self.connection
            .get_or_try_init(connect)
            .await
            .cloned()
            .map_err(|e| StoreError(e.to_string()))
    }

    fn key(&self, counter: &Counter) -> String {
        format!("{}:{}", self.config.prefix, counter.key)
    }

    pub async fn reserve(&self, counters: &[Counter]) -> Result<Outcome, StoreError> {
        let now = now_ms();
        let mut invocation = self.reserve.prepare_invoke();
        for c in counters {
            invocation
                .key(self.key(c))
                .arg(c.amount)
                .arg(c.max)
                .arg(c.ttl_ms(now));
        }
        let run = async {
            let mut conn = self.connection().await?;
            invocation
                .invoke_async::<Vec<i64>>(&mut conn)
                .await
                .map_err(|e| StoreError(e.to_string()))
        };
        let reply = self.count(
            tokio::time::timeout(self.config.timeout, run)
                .await
                .map_err(|_| StoreError("Redis timed out".into()))
                .and_then(|r| r),
        )?;
        match reply.split_first() {
            Some((0, values)) => Ok(Outcome::Granted(
                values.iter().map(|v| (*v).max(0) as u64).collect(),
            )),
            Some((i, current)) => Ok(Outcome::Refused(
                (*i as usize).saturating_sub(1),
                current.iter().map(|v| (*v).max(0) as u64).collect(),
            )),
            None => Err(StoreError("empty reply from the reserve script".into())),
        }
    }

    pub async fn read(&self, counters: &[Counter]) -> Result<Vec<u64>, StoreError> {
        let keys: Vec<String> = counters.iter().map(|c| self.key(c)).collect();
        let run = async {
            let mut conn = self.connection().await?;
            redis::cmd("MGET")
                .arg(&keys)
                .query_async::<Vec<Option<i64>>>(&mut conn)
                .await
                .map_err(|e| StoreError(e.to_string()))
        };
        let values = self.count(
            tokio::time::timeout(self.config.timeout, run)
                .await
                .map_err(|_| StoreError("Redis timed out".into()))
                .and_then(|r| r),
        )?;
        Ok(values
            .into_iter()
            .map(|v| v.unwrap_or(0).max(0) as u64)
            .collect())
    }

    pub async fn adjust(&self, deltas: &[(String, i64)]) -> Result<(), StoreError> {
        let mut invocation = self.adjust.prepare_invoke();
        for (key, delta) in deltas {
            invocation
                .key(format!("{}:{key}", self.config.prefix))
                .arg(*delta);
        }
        let run = async {
            let mut conn = self.connection().await?;
            invocation
                .invoke_async::<i64>(&mut conn)
                .await
                .map(|_| ())
                .map_err(|e| StoreError(e.to_string()))
        };
        self.count(
            tokio::time::timeout(self.config.timeout, run)
                .await
                .map_err(|_| StoreError("Redis timed out".into()))
                .and_then(|r| r),
        )
    }
}

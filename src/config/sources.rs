//! Where configuration values come from: the TOML file and `FILEGATE__…` variables, merged by figment.
//!
//! Both are figment providers of our own rather than figment's `Toml::file` and `Env`: `Toml::file`
//! searches parent directories for a relative path and treats a missing file as empty, and `Env`
//! reads the process environment, which tests must not touch. Owning the providers also lets every
//! message name the exact file or variable a bad value came from.

use std::path::PathBuf;

use figment::error::Kind;
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

use super::{validate, Config, ConfigError, Problem, ENV_PREFIX};

const FILE_SOURCE: &str = "config file";
const ENV_SOURCE: &str = "environment variable";

/// Whether `name` is one of ours (`FILEGATE__…`, in any case, as figment's `Env` would match it).
pub(super) fn is_config_var(name: &str) -> bool {
    name.get(..ENV_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(ENV_PREFIX))
}

/// The TOML file, already parsed.
struct FileSource {
    origin: String,
    dict: Dict,
}

impl FileSource {
    fn parse(text: &str, origin: &str) -> Result<Self, Problem> {
        let dict = toml::from_str::<Dict>(text).map_err(|e| Problem {
            key: String::new(),
            origin: Some(origin.to_owned()),
            message: format!("not valid TOML: {}", e.to_string().trim_end()),
        })?;
        Ok(FileSource {
            origin: origin.to_owned(),
            dict,
        })
    }
}

impl Provider for FileSource {
    fn metadata(&self) -> Metadata {
        Metadata::named(FILE_SOURCE).source(figment::Source::File(PathBuf::from(&self.origin)))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

/// One `FILEGATE__…` variable: its name and the key path it sets (`["storage", "backend"]`).
#[derive(Clone)]
struct EnvVar {
    name: String,
    path: Vec<String>,
    value: String,
}

/// The `FILEGATE__…` variables, in name order.
#[derive(Clone, Default)]
struct EnvSource {
    vars: Vec<EnvVar>,
}

impl EnvSource {
    /// Keeps the variables with our prefix; a name with an empty level (`FILEGATE__FTP____X`) is a
    /// problem rather than silently ignored.
    fn parse<I, K, V>(env: I) -> (Self, Vec<Problem>)
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let mut vars = Vec::new();
        let mut problems = Vec::new();
        for (name, value) in env {
            let name: String = name.into();
            if !is_config_var(&name) {
                continue;
            }
            let path: Vec<String> = name[ENV_PREFIX.len()..]
                .split("__")
                .map(|s| s.trim().to_ascii_lowercase())
                .collect();
            if path.iter().any(|s| s.is_empty()) {
                problems.push(Problem {
                    key: String::new(),
                    origin: Some(name),
                    message: "not a config key; name a key as FILEGATE__SECTION__KEY with `__` \
                              between levels, such as FILEGATE__STORAGE__BACKEND"
                        .into(),
                });
                continue;
            }
            vars.push(EnvVar {
                name,
                path,
                value: value.into(),
            });
        }
        vars.sort_by(|a, b| a.name.cmp(&b.name));
        (EnvSource { vars }, problems)
    }

    /// The variable that set `path` or a key above it (the longest such), if any.
    fn var_for(&self, path: &[impl AsRef<str>]) -> Option<&EnvVar> {
        self.vars
            .iter()
            .filter(|v| {
                v.path.len() <= path.len() && v.path.iter().zip(path).all(|(a, b)| a == b.as_ref())
            })
            .max_by_key(|v| v.path.len())
    }
}

impl Provider for EnvSource {
    fn metadata(&self) -> Metadata {
        Metadata::named(ENV_SOURCE).interpolater(|_: &Profile, keys: &[&str]| {
            let upper: Vec<String> = keys.iter().map(|k| k.to_ascii_uppercase()).collect();
            format!("{ENV_PREFIX}{}", upper.join("__"))
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        for var in &self.vars {
            // figment's value syntax: `true`, `42`, `["*.tmp", "*.part"]`, `"quoted text"`, else text.
            let value: Value = var
                .value
                .parse()
                .expect("parsing a figment value is infallible");
            insert_nested(&mut dict, &var.path, value);
        }
        Ok(Profile::Default.collect(dict))
    }
}

fn insert_nested(dict: &mut Dict, path: &[String], value: Value) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if rest.is_empty() {
        dict.insert(first.clone(), value);
        return;
    }
    let entry = dict
        .entry(first.clone())
        .or_insert_with(|| Value::from(Dict::new()));
    if entry.as_dict().is_none() {
        *entry = Value::from(Dict::new());
    }
    if let Value::Dict(_, inner) = entry {
        insert_nested(inner, rest, value);
    }
}

/// Parses, merges (the environment wins), validates and reads password files.
pub(super) fn load<I, K, V>(text: &str, origin: &str, env: I) -> Result<Config, ConfigError>
where
    I: IntoIterator<Item = (K, V)>,
    K: Into<String>,
    V: Into<String>,
{
    let (env, mut problems) = EnvSource::parse(env);
    let file = match FileSource::parse(text, origin) {
        Ok(file) => file,
        Err(problem) => {
            problems.insert(0, problem);
            return Err(ConfigError::Invalid { problems });
        }
    };
    let figment = Figment::new().merge(file).merge(env.clone());
    let mut config: Config = match figment.extract() {
        Ok(config) => config,
        Err(error) => {
            problems.extend(error.into_iter().map(|e| parse_problem(e, origin, &env)));
            return Err(ConfigError::Invalid { problems });
        }
    };
    problems.extend(validate::problems(&config));
    problems.extend(read_password_files(&mut config));
    for problem in &mut problems {
        if problem.origin.is_none() && !problem.key.is_empty() {
            problem.origin = origin_of_key(&figment, &problem.key, origin, &env);
        }
    }
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid { problems })
    }
}

/// Reads the password files that the chosen backend and broker use.
fn read_password_files(config: &mut Config) -> Vec<Problem> {
    let mut problems = Vec::new();
    if config.storage.backend == super::StorageBackend::Redis {
        match read_secret(
            "storage.redis.password_file",
            &config.storage.redis.password_file,
        ) {
            Ok(secret) => config.storage.redis.password_from_file = secret,
            Err(problem) => problems.push(problem),
        }
    }
    if config.mqtt.mode == super::MqttMode::External {
        match read_secret("mqtt.password_file", &config.mqtt.password_file) {
            Ok(secret) => config.mqtt.password_from_file = secret,
            Err(problem) => problems.push(problem),
        }
    }
    for (i, hook) in config.webhooks.iter_mut().enumerate() {
        match read_secret(&format!("webhooks[{i}].secret_file"), &hook.secret_file) {
            Ok(secret) => hook.secret_from_file = secret,
            Err(problem) => problems.push(problem),
        }
    }
    problems
}

fn read_secret(key: &str, path: &Option<PathBuf>) -> Result<Option<String>, Problem> {
    let Some(path) = path else {
        return Ok(None);
    };
    let fix = "point it at a readable file that holds only the password, or set it to \"\"";
    let text = std::fs::read_to_string(path)
        .map_err(|e| Problem::new(key, format!("cannot read {}: {e}; {fix}", path.display())))?;
    let secret = text
        .strip_suffix('\n')
        .map(|s| s.strip_suffix('\r').unwrap_or(s))
        .unwrap_or(&text);
    if secret.is_empty() {
        return Err(Problem::new(
            key,
            format!("{} is empty; {fix}", path.display()),
        ));
    }
    Ok(Some(secret.to_owned()))
}

/// The key as written in TOML: `["users", "0", "name"]` → `users[0].name`.
fn display_key(path: &[String]) -> String {
    let mut key = String::new();
    for segment in path {
        if segment.parse::<usize>().is_ok() {
            key.push_str(&format!("[{segment}]"));
        } else {
            if !key.is_empty() {
                key.push('.');
            }
            key.push_str(segment);
        }
    }
    key
}

/// Names the file or variable a value came from.
fn origin_of(md: &Metadata, path: &[String], file_origin: &str, env: &EnvSource) -> Option<String> {
    match md.name.as_ref() {
        ENV_SOURCE => env.var_for(path).map(|v| v.name.clone()),
        FILE_SOURCE => Some(file_origin.to_owned()),
        _ => None,
    }
}

/// Names the file or variable that set `key` (`users[0].name` is looked up as `users`), `None` for
/// a built-in default.
fn origin_of_key(
    figment: &Figment,
    key: &str,
    file_origin: &str,
    env: &EnvSource,
) -> Option<String> {
    // Figment looks up dict keys only: stop at the first list.
    let mut path = Vec::new();
    for segment in key.split('.') {
        match segment.split_once('[') {
            Some((name, _)) => {
                path.push(name.to_owned());
                break;
            }
            None => path.push(segment.to_owned()),
        }
    }
    let md = figment.find_metadata(&path.join("."))?;
    origin_of(md, &path, file_origin, env)
}

/// Turns one figment error into a problem naming the key, its source and the fix.
fn parse_problem(error: figment::Error, file_origin: &str, env: &EnvSource) -> Problem {
    let origin = error
        .metadata
        .as_ref()
        .and_then(|md| origin_of(md, &error.path, file_origin, env));
    let from_env = origin.as_deref().is_some_and(is_config_var);
    let message = match &error.kind {
        Kind::UnknownField(_, []) => "unknown key".to_owned(),
        Kind::UnknownField(_, expected) => {
            format!("unknown key; the keys here are {}", expected.join(", "))
        }
        Kind::UnknownVariant(found, expected) => {
            let choices: Vec<String> = expected.iter().map(|e| format!("{e:?}")).collect();
            format!(
                "{found:?} is not a valid choice; use one of {}",
                choices.join(", ")
            )
        }
        Kind::InvalidType(found, expected) => {
            let mut message = format!("expected {expected}, found {found}");
            if from_env && expected.contains("sequence") {
                message.push_str("; write a list as [\"a\", \"b\"]");
            }
            message
        }
        Kind::InvalidValue(found, expected) => format!("expected {expected}, found {found}"),
        Kind::Message(message) => message.clone(),
        other => other.to_string(),
    };
    Problem {
        key: display_key(&error.path),
        origin,
        message,
    }
}

//! The `gleipnir` command: thin glue from arguments to [`gleipnir::app::App`] and
//! [`gleipnir::server::run`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use gleipnir::app::{App, Built};
use gleipnir::clock::Clock;
use gleipnir::config::{Config, ConfigErrors};
use gleipnir::jose::JwsAlgorithm;
use gleipnir::server::tls::Tls;
use gleipnir::telemetry::{self, LogFormat};
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(
    name = "gleipnir",
    version,
    about = "OAuth 2.0 Token Exchange (RFC 8693) STS that keeps delegation chains intact"
)]
struct Cli {
    /// Log line format.
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve with a configuration file.
    Serve {
        /// The TOML configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Public listener address (overrides server.listen).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Admin listener address (overrides server.admin_listen).
        #[arg(long)]
        admin_listen: Option<SocketAddr>,
    },
    /// Validate a configuration (keys, secrets, policies) without serving.
    Check {
        /// The TOML configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Print the public JWKS this configuration's server publishes (its signing key, and
    /// with signing.key_dir the upcoming and retired keys), for resource servers.
    Jwks {
        /// The TOML configuration file; only its signing key or key directory is read.
        #[arg(long)]
        config: PathBuf,
    },
    /// Policy tools: explain a decision, run policy tests.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Write a new private signing key (PKCS#8 PEM, mode 0600).
    Keygen {
        /// ES256 or EdDSA.
        #[arg(long, default_value = "ES256")]
        alg: String,
        /// Where to write it; an existing file is never overwritten.
        #[arg(long)]
        out: PathBuf,
    },
    /// Run on loopback with an ephemeral key, a demo issuer, demo clients and policy.
    /// For trying gleipnir out; never for production.
    Dev {
        /// Public listener address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Admin listener address.
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin_listen: SocketAddr,
        /// The demo issuer's address (its JWKS and its demo-token endpoint).
        #[arg(long, default_value = "127.0.0.1:8081")]
        demo_issuer_listen: SocketAddr,
        /// Also write the configuration as files into this directory (gleipnir.toml,
        /// signing.pem, policies/demo.toml), and serve from them; never overwrites.
        #[arg(long, value_name = "DIR")]
        write_config: Option<std::path::PathBuf>,
    },
}

// Parsed once per process: the size of a variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum PolicyCommand {
    /// Dry run: what would the policy decide for this client and these tokens, and why.
    /// Signs nothing. Verifies signatures against the issuers' keys unless --offline.
    Explain(ExplainArgs),
    /// Run the policy test cases (*.toml) of a directory; exit 1 if any fails.
    Test {
        /// The directory of case files.
        dir: PathBuf,
        /// Print every case's explanation, not only the failing ones'.
        #[arg(long, short)]
        verbose: bool,
    },
}

/// The arguments of `gleipnir policy explain`.
#[derive(clap::Args)]
struct ExplainArgs {
    /// The TOML configuration file (its policies are the ones explained).
    #[arg(long)]
    config: PathBuf,
    /// The client that would ask (not authenticated: no secret needed).
    #[arg(long)]
    client: String,
    /// The subject token, or @FILE to read it from a file.
    #[arg(long)]
    subject_token: String,
    /// access_token, jwt or id_token.
    #[arg(long, default_value = "access_token")]
    subject_token_type: String,
    /// The actor token, or @FILE.
    #[arg(long)]
    actor_token: Option<String>,
    /// access_token, jwt or id_token.
    #[arg(long, default_value = "access_token")]
    actor_token_type: String,
    /// `audience` (repeatable).
    #[arg(long)]
    audience: Vec<String>,
    /// `resource` (repeatable).
    #[arg(long)]
    resource: Vec<String>,
    /// `scope` (space-separated).
    #[arg(long)]
    scope: Option<String>,
    /// access_token or jwt.
    #[arg(long)]
    requested_token_type: Option<String>,
    /// Skip signature verification (and fetch nothing): every line says so.
    #[arg(long)]
    offline: bool,
    /// Decide at this time (Unix seconds) instead of now, e.g. for sample tokens.
    #[arg(long)]
    at: Option<u64>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(&format!("cannot start the runtime: {e}")),
    };
    let command = match cli.command {
        // Its logging needs its configuration.
        Command::Serve {
            config,
            listen,
            admin_listen,
        } => return serve_command(cli.log_format, &runtime, &config, listen, admin_listen),
        other => other,
    };
    // Held to the end: dropping it writes out the queued log lines.
    let _logs = telemetry::init(cli.log_format);
    match command {
        Command::Serve { .. } => ExitCode::SUCCESS, // served above
        Command::Check { config } => check(&config),
        Command::Jwks { config } => jwks(&config),
        Command::Keygen { alg, out } => keygen(&alg, &out),
        Command::Policy {
            command: PolicyCommand::Test { dir, verbose },
        } => runtime.block_on(policy_test(&dir, verbose)),
        Command::Policy {
            command: PolicyCommand::Explain(args),
        } => runtime.block_on(policy_explain(args)),
        Command::Dev {
            listen,
            admin_listen,
            demo_issuer_listen,
            write_config,
        } => runtime.block_on(async {
            let addrs = gleipnir::dev::DevAddresses {
                listen,
                admin_listen,
                demo_issuer_listen,
            };
            let shutdown = gleipnir::server::shutdown_signal();
            match gleipnir::dev::run(addrs, write_config.as_deref(), shutdown).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            }
        }),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

/// Every configuration problem, one `error:` line each, so that one run shows them all.
fn fail_config(errors: &ConfigErrors) -> ExitCode {
    for e in errors {
        eprintln!("error: {e}");
    }
    ExitCode::from(2)
}

/// Everything `serve` needs before it binds: the configuration, the App, and the public
/// listener's TLS certificate when `[tls]` is set.
type Loaded = (Config, Built, Option<Arc<Tls>>);

fn load(path: &std::path::Path) -> Result<Loaded, ConfigErrors> {
    built(Config::load(path)?)
}

fn built(config: Config) -> Result<Loaded, ConfigErrors> {
    let built = App::build(&config, Clock::System)?;
    let tls = Tls::load(&config)?;
    Ok((config, built, tls))
}

/// `serve`: the configuration is read first, since it says where traces go; the
/// logging (and trace export) is installed before anything else is loaded, and trace
/// export is flushed while the runtime still runs.
fn serve_command(
    format: telemetry::LogFormat,
    runtime: &tokio::runtime::Runtime,
    path: &std::path::Path,
    listen: Option<SocketAddr>,
    admin_listen: Option<SocketAddr>,
) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => return fail_config(&e),
    };
    let otlp = config
        .telemetry
        .otlp
        .as_ref()
        .map(|otlp| (otlp, runtime.handle().clone()));
    let mut logs = match telemetry::init_with_traces(format, otlp, &config.origin) {
        Ok(logs) => logs,
        Err(e) => return fail_config(&e.into()),
    };
    let code = runtime.block_on(serve(config, listen, admin_listen));
    logs.shutdown_traces();
    code
}

async fn serve(
    config: Config,
    listen: Option<SocketAddr>,
    admin_listen: Option<SocketAddr>,
) -> ExitCode {
    let (config, built, tls) = match built(config) {
        Ok(loaded) => loaded,
        Err(e) => return fail_config(&e),
    };
    let public_addr = listen.unwrap_or(config.server.listen);
    let admin_addr = admin_listen.unwrap_or(config.server.admin_listen);
    let public = match TcpListener::bind(public_addr).await {
        Ok(l) => l,
        Err(e) => {
            return fail(&format!(
                "cannot listen on {public_addr} (server.listen): {e}"
            ));
        }
    };
    let admin = match TcpListener::bind(admin_addr).await {
        Ok(l) => l,
        Err(e) => {
            return fail(&format!(
                "cannot listen on {admin_addr} (server.admin_listen): {e}"
            ));
        }
    };
    // Port 0 asks the OS for a free port: log the addresses actually bound.
    let bound = |l: &TcpListener, asked: SocketAddr| l.local_addr().unwrap_or(asked);
    tracing::info!(
        public = %bound(&public, public_addr),
        admin = %bound(&admin, admin_addr),
        issuer = %config.issuer,
        tls = tls.is_some(),
        "gleipnir serving"
    );
    if tls.is_none() && !public_addr.ip().is_loopback() {
        // Not refused: TLS may be terminated in front (an ingress, a mesh sidecar).
        tracing::warn!(
            public = %public_addr,
            "the public listener serves plain HTTP on a non-loopback address: client \
             secrets and tokens travel in clear text unless TLS is terminated in front \
             (set [tls] to serve HTTPS)"
        );
    }
    let shutdown = gleipnir::server::shutdown_signal();
    match tls {
        Some(tls) => gleipnir::server::run_tls(built, public, tls, admin, shutdown).await,
        None => gleipnir::server::run(built, public, admin, shutdown).await,
    }
    ExitCode::SUCCESS
}

fn check(path: &std::path::Path) -> ExitCode {
    // What `serve` resolves before it binds, the collector's header secrets included.
    let loaded = load(path).and_then(|(config, built, tls)| {
        if let Some(otlp) = &config.telemetry.otlp {
            telemetry::otlp::headers(otlp, &config.origin)?;
        }
        Ok((config, built, tls))
    });
    match loaded {
        Ok((config, _, _)) => {
            let plural = |n: usize| if n == 1 { "" } else { "s" };
            let (issuers, clients) = (config.issuers.len(), config.clients.len());
            println!(
                "{}: ok ({issuers} upstream issuer{}, {clients} client{})",
                path.display(),
                plural(issuers),
                plural(clients)
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail_config(&e),
    }
}

fn jwks(path: &std::path::Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => return fail_config(&e),
    };
    match gleipnir::app::published_jwks(&config, Clock::System) {
        Ok(document) => {
            println!("{document}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e.to_string()),
    }
}

async fn policy_test(dir: &std::path::Path, verbose: bool) -> ExitCode {
    let results = match gleipnir::cases::run_dir(dir).await {
        Ok(results) => results,
        Err(e) => return fail(&e),
    };
    let failed = results.iter().filter(|r| !r.failures.is_empty()).count();
    for result in &results {
        let passed = result.failures.is_empty();
        println!("{}: {}", if passed { "PASS" } else { "FAIL" }, result.name);
        for failure in &result.failures {
            println!("    {failure}");
        }
        if !passed || verbose {
            for line in &result.explanation {
                println!("      | {line}");
            }
        }
    }
    println!("{}/{} passed", results.len() - failed, results.len());
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn policy_explain(args: ExplainArgs) -> ExitCode {
    use gleipnir::exchange::dry_run::Signatures;
    let form = match explain_form(&args).and_then(|p| gleipnir::cases::form_body(&p)) {
        Ok(form) => form,
        Err(e) => return fail(&e),
    };
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => return fail_config(&e),
    };
    // Offline, nothing is verified or signed: no key file or secret is needed.
    let (config, signatures) = if args.offline {
        (config.for_offline_dry_run(), Signatures::Offline)
    } else {
        (config, Signatures::Verified)
    };
    let clock = match args.at {
        Some(at) => Clock::from(gleipnir::clock::ManualClock::new(at)),
        None => Clock::System,
    };
    let app = match App::build(&config, clock) {
        Ok(built) => built.app,
        Err(e) => return fail(&e.to_string()),
    };
    if signatures == Signatures::Verified {
        app.exchanger().fetch_issuer_keys().await;
    }
    let explanation = app
        .exchanger()
        .dry_run(&args.client, &form, signatures)
        .await;
    for line in explanation.lines() {
        println!("{line}");
    }
    // Scriptable: 0 granted, 1 refused (2: the command itself failed).
    if explanation.outcome.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The token-exchange parameters `policy explain` was given, as form pairs (tokens read
/// from `@FILE` where asked, token types as URNs).
fn explain_form(args: &ExplainArgs) -> Result<Vec<(String, String)>, String> {
    let urn = |name: &str, flag: &str| {
        gleipnir::oauth::TokenType::from_name(name)
            .map(|t| t.urn().to_owned())
            .ok_or_else(|| format!("{flag}: unknown token type {name:?}"))
    };
    let read = |value: &str| match value.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map(|t| t.trim().to_owned())
            .map_err(|e| format!("cannot read {path}: {e}")),
        None => Ok(value.to_owned()),
    };
    let pair = |name: &str, value: String| (name.to_owned(), value);
    let mut pairs = vec![
        pair(
            "grant_type",
            gleipnir::oauth::GRANT_TYPE_TOKEN_EXCHANGE.to_owned(),
        ),
        pair("subject_token", read(&args.subject_token)?),
        pair(
            "subject_token_type",
            urn(&args.subject_token_type, "--subject-token-type")?,
        ),
    ];
    if let Some(actor) = &args.actor_token {
        pairs.push(pair("actor_token", read(actor)?));
        pairs.push(pair(
            "actor_token_type",
            urn(&args.actor_token_type, "--actor-token-type")?,
        ));
    }
    pairs.extend(args.audience.iter().map(|a| pair("audience", a.clone())));
    pairs.extend(args.resource.iter().map(|r| pair("resource", r.clone())));
    if let Some(scope) = &args.scope {
        pairs.push(pair("scope", scope.clone()));
    }
    if let Some(t) = &args.requested_token_type {
        pairs.push(pair(
            "requested_token_type",
            urn(t, "--requested-token-type")?,
        ));
    }
    Ok(pairs)
}

fn keygen(alg: &str, out: &std::path::Path) -> ExitCode {
    let Some(alg) = JwsAlgorithm::from_name(alg) else {
        return fail(&format!("unknown algorithm {alg:?} (ES256 or EdDSA)"));
    };
    let key = match gleipnir::keys::generate_pkcs8(alg) {
        Ok(k) => k,
        Err(e) => return fail(&e.to_string()),
    };
    let kid = match gleipnir::keys::SigningKey::from_pkcs8(alg, &key) {
        Ok(k) => k.kid().to_owned(),
        Err(e) => return fail(&e.to_string()),
    };
    let pem = gleipnir::keys::pkcs8_to_pem(&key);
    if let Err(e) = gleipnir::keys::write_private(out, pem.as_bytes()) {
        return fail(&format!("cannot write {}: {e}", out.display()));
    }
    println!(
        "wrote {} key to {} (kid {kid})",
        alg.as_str(),
        out.display()
    );
    ExitCode::SUCCESS
}

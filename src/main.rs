//! The `gleipnir` command: thin glue from arguments to [`gleipnir::app::App`] and
//! [`gleipnir::server::run`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use gleipnir::app::App;
use gleipnir::clock::Clock;
use gleipnir::config::Config;
use gleipnir::jose::JwsAlgorithm;
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
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(&format!("cannot start the runtime: {e}")),
    };
    match cli.command {
        Command::Serve {
            config,
            listen,
            admin_listen,
        } => runtime.block_on(serve(config, listen, admin_listen)),
        Command::Check { config } => check(&config),
        Command::Keygen { alg, out } => keygen(&alg, &out),
        Command::Dev {
            listen,
            admin_listen,
            demo_issuer_listen,
        } => runtime.block_on(async {
            let addrs = gleipnir::dev::DevAddresses {
                listen,
                admin_listen,
                demo_issuer_listen,
            };
            match gleipnir::dev::run(addrs, gleipnir::server::shutdown_signal()).await {
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

fn load(path: &std::path::Path) -> Result<(Config, App), String> {
    let config = Config::load(path).map_err(|e| e.to_string())?;
    let app = App::build(&config, Clock::System).map_err(|e| e.to_string())?;
    Ok((config, app))
}

async fn serve(
    path: PathBuf,
    listen: Option<SocketAddr>,
    admin_listen: Option<SocketAddr>,
) -> ExitCode {
    let (config, app) = match load(&path) {
        Ok(loaded) => loaded,
        Err(e) => return fail(&e),
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
        "gleipnir serving"
    );
    gleipnir::server::run(
        Arc::new(app),
        public,
        admin,
        gleipnir::server::shutdown_signal(),
    )
    .await;
    ExitCode::SUCCESS
}

fn check(path: &std::path::Path) -> ExitCode {
    match load(path) {
        Ok((config, _)) => {
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
        Err(e) => fail(&e),
    }
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
    if let Err(e) = write_private(out, pem.as_bytes()) {
        return fail(&format!("cannot write {}: {e}", out.display()));
    }
    println!(
        "wrote {} key to {} (kid {kid})",
        alg.as_str(),
        out.display()
    );
    ExitCode::SUCCESS
}

fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    if written.is_err() {
        // Never leave a truncated key behind.
        let _ = std::fs::remove_file(path);
    }
    written
}

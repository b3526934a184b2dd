use aethex_server::config::{Cli, Command, ProjectAction};
use aethex_server::{Config, Server};
use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let config = Config::load(&cli.overrides)?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config).await,
        Command::Project {
            action: ProjectAction::Create { name },
        } => create_project(config, &name).await,
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listen = config.listen;
    let data_dir = config.data_dir.clone();
    let server = Server::build(config).await?;
    if let Some(created) = &server.created_default_project {
        println!("Created project `default`.");
        println!("  client key: {}", created.client_key);
        println!("  server key: {}  (shown once)", created.server_key);
    }
    if let Ok(key) = std::fs::read_to_string(data_dir.join("default-project-key")) {
        println!("Project `default` client key: {}", key.trim());
    }
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!(
        "AeThex Cloud listening on http://{}",
        listener.local_addr()?
    );
    server.serve(listener, shutdown_signal()).await?;
    Ok(())
}

async fn create_project(config: Config, name: &str) -> anyhow::Result<()> {
    aethex_server::data_files::secure_data_dir(&config.data_dir)?;
    let db = aethex_server::db::Db::connect(&config.database_url()).await?;
    let projects = aethex_server::projects::Projects::new(db);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let created = projects.create(name, now).await?;
    println!("project: {} ({})", created.project.name, created.project.id);
    println!("client key: {}", created.client_key);
    println!("server key: {}", created.server_key);
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        if let Ok(mut sig) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            sig.recv().await;
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}

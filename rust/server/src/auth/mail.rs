//! Outgoing mail (verification, password reset). Every mail is stored in `mail_outbox`; with
//! `mail.smtp_url` set it is also sent over SMTP (lettre) in the background, so the request that
//! caused it neither waits for the SMTP server nor reveals by its timing whether a mail was sent.
//! Without SMTP the outbox (and the log line) is the delivery the operator reads.

use std::sync::Arc;

use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::clock::Clock;
use crate::config::MailConfig;
use crate::db::{new_id, Db};
use crate::error::{ApiError, ApiResult};

#[derive(Clone)]
pub struct Mailer {
    from: Mailbox,
    smtp: Option<AsyncSmtpTransport<Tokio1Executor>>,
    db: Db,
}

pub struct Mail {
    pub project_id: String,
    pub to: String,
    pub subject: String,
    pub body: String,
}

impl Mailer {
    pub fn new(config: &MailConfig, db: Db) -> anyhow::Result<Self> {
        let from: Mailbox = config
            .from
            .parse()
            .map_err(|e| anyhow::anyhow!("mail.from {:?} is not a mailbox: {e}", config.from))?;
        let smtp = match &config.smtp_url {
            Some(url) => Some(
                AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .map_err(|e| anyhow::anyhow!("mail.smtp_url is invalid: {e}"))?
                    .build(),
            ),
            None => None,
        };
        Ok(Self { from, smtp, db })
    }

    /// Records the mail in the outbox and hands it to SMTP (when configured) in the background.
    pub async fn send(&self, mail: Mail, clock: &Arc<dyn Clock>) -> ApiResult<()> {
        let now_ms = clock.now_ms();
        let to: Mailbox = mail
            .to
            .parse()
            .map_err(|_| ApiError::invalid("not a deliverable email address"))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(&mail.subject)
            .header(lettre::message::header::ContentType::TEXT_PLAIN)
            .body(mail.body.clone())
            .map_err(ApiError::internal)?;
        let id = new_id();
        sqlx::query(
            "INSERT INTO mail_outbox (id, project_id, to_addr, subject, body, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(&mail.project_id)
        .bind(&mail.to)
        .bind(&mail.subject)
        .bind(&mail.body)
        .bind(now_ms)
        .execute(&self.db.write)
        .await?;
        let Some(smtp) = self.smtp.clone() else {
            tracing::info!(to = %mail.to, subject = %mail.subject, body = %mail.body, "mail kept in outbox (no SMTP configured)");
            return Ok(());
        };
        let db = self.db.clone();
        let clock = clock.clone();
        tokio::spawn(async move {
            let outcome = smtp.send(message).await;
            let sent_at = clock.now_ms();
            let (sent, error) = match outcome {
                Ok(_) => (Some(sent_at), None),
                Err(e) => {
                    tracing::warn!(error = %e, to = %mail.to, "SMTP delivery failed; mail stays in outbox");
                    (None, Some(e.to_string()))
                }
            };
            let updated =
                sqlx::query("UPDATE mail_outbox SET sent_at = $1, error = $2 WHERE id = $3")
                    .bind(sent)
                    .bind(error)
                    .bind(&id)
                    .execute(&db.write)
                    .await;
            if let Err(e) = updated {
                tracing::warn!(error = %e, "recording mail delivery failed");
            }
        });
        Ok(())
    }
}

//! Outgoing mail (verification, password reset). Every mail is stored in `mail_outbox`; with
//! `mail.smtp_url` set it is also sent over SMTP (lettre) in the background, so the request that
//! caused it does not wait for the SMTP server.
//! Without SMTP the outbox (and the log line) is the delivery the operator reads.

use std::sync::Arc;

use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use sqlx::AnyConnection;

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

    /// Records the mail in the outbox inside the caller's transaction, so the mail exists
    /// exactly when what it announces (token, account) was committed. Hand the result to
    /// [`Mailer::deliver`] after the commit.
    pub async fn enqueue(
        &self,
        conn: &mut AnyConnection,
        mail: Mail,
        now_ms: i64,
    ) -> ApiResult<QueuedMail> {
        let to: Mailbox = mail
            .to
            .parse()
            .map_err(|_| ApiError::invalid("email is not a deliverable address"))?;
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
        .execute(&mut *conn)
        .await?;
        Ok(QueuedMail { id, mail, message })
    }

    /// Sends a committed outbox mail over SMTP in the background and records the outcome; without
    /// SMTP it only logs it (the outbox row is the delivery).
    pub fn deliver(&self, queued: QueuedMail, clock: &Arc<dyn Clock>) {
        let QueuedMail { id, mail, message } = queued;
        let Some(smtp) = self.smtp.clone() else {
            tracing::info!(to = %mail.to, subject = %mail.subject, body = %mail.body, "mail kept in outbox (no SMTP configured)");
            return;
        };
        let db = self.db.clone();
        let clock = clock.clone();
        tokio::spawn(async move {
            let (sent_at, error) = match smtp.send(message).await {
                Ok(_) => (Some(clock.now_ms()), None),
                Err(e) => {
                    tracing::warn!(error = %e, to = %mail.to, "SMTP delivery failed; mail stays in outbox");
                    (None, Some(e.to_string()))
                }
            };
            let updated =
                sqlx::query("UPDATE mail_outbox SET sent_at = $1, error = $2 WHERE id = $3")
                    .bind(sent_at)
                    .bind(error)
                    .bind(&id)
                    .execute(&db.write)
                    .await;
            if let Err(e) = updated {
                tracing::warn!(error = %e, "recording mail delivery failed");
            }
        });
    }
}

/// An outbox mail written but not yet handed to SMTP.
pub struct QueuedMail {
    id: String,
    mail: Mail,
    message: Message,
}

//! A finished request's images: download each (with retries) under a
//! download permit, then journal the row `done` with what it cost.
//!
//! Cancellation: a soft stop is ignored (what was paid for is collected); a
//! hard stop leaves the row collectable before its next image.

use super::finish::Saved;
use super::RowRun;
use crate::api;
use crate::journal::{now_ms, Charged};
use crate::plan::Usd;
use crate::progress::{Event, Stage};
use crate::run::{Start, Stop};
use crate::vocab::Code;
use crate::vocab::Ticket;

impl RowRun {
    pub(super) async fn download(
        &mut self,
        mut images: Vec<String>,
        ticket: Option<Ticket>,
    ) -> Start {
        let ctx = self.ctx.clone();
        let settings = &ctx.settings;
        let request = ticket
            .as_ref()
            .map_or(String::new(), |t| t.request_id.clone());
        if images.is_empty() {
            return self
                .fail(
                    Code::NoImages.as_str(),
                    "the request completed without images",
                    Charged::Possibly,
                )
                .await;
        }
        let asked = self.req.images() as usize;
        if images.len() > asked {
            self.say(format!(
                "warning: row {}: the gateway sent {} images for a request of {asked}; the extra ones are ignored (and not paid for)",
                self.id,
                images.len()
            ));
            images.truncate(asked);
        }
        ctx.event(Event::Enter(Stage::Downloading));
        let stem = ctx.stems.stem(&self.id, self.key);
        let mut saved = Saved::default();
        for (n, image) in images.iter().enumerate() {
            if let Some(stop) = self.shutdown.hard() {
                ctx.event(Event::Leave(Stage::Downloading));
                return self
                    .leave_collectable(stop.code(), &stop.describe(), &request)
                    .await;
            }
            let name = format!("{stem}_{n}");
            let got = api::retry(&settings.backoff, settings.download_attempts, |_| {
                ctx.client.download(image, &ctx.images_dir, &name)
            })
            .await;
            match got {
                Ok(d) => saved.push(d.path, d.sha256, d.bytes, d.mtime_ns),
                Err(e) => {
                    ctx.event(Event::Leave(Stage::Downloading));
                    let message = format!("image {n} of request {request}: {e}");
                    if e.is_local() {
                        ctx.stop(Stop::Disk(e.message.clone()));
                        return self.leave_collectable(&e.code, &message, &request).await;
                    }
                    if e.is_not_found() {
                        return self
                            .fail(Code::DownloadLost.as_str(), &message, Charged::Possibly)
                            .await;
                    }
                    if e.code == Code::KeyChanged {
                        // Its image URL was written with another key: ask
                        // the request for fresh ones (its id may be clean).
                        if let Some(ticket) = ticket {
                            return Start::Poll {
                                ticket,
                                since_ms: now_ms(),
                            };
                        }
                        return self.leave_collectable(&e.code, &message, &request).await;
                    }
                    return self
                        .leave_collectable(Code::DownloadFailed.as_str(), &message, &request)
                        .await;
                }
            }
        }
        ctx.event(Event::Leave(Stage::Downloading));
        let count = saved.files.len() as u64;
        let cost = ctx.plan.pricing.per_image(self.req.kind()).times(count);
        let to_store = ctx.cache.is_some().then(|| saved.pairs());
        // On a bucket, the files are there before the line that says so.
        if let Err(why) = ctx.publish(&saved.paths()).await {
            let message = format!("request {request}: {why}");
            return self
                .leave_collectable(Code::Disk.as_str(), &message, &request)
                .await;
        }
        if !ctx.record(&self.done(saved, cost, false)).await {
            return Start::End;
        }
        self.write_sidecars().await;
        if let Some(files) = to_store {
            self.store_in_cache(files).await;
        }
        // The reservation was for every image asked; keep only what was made.
        if self.reserved {
            ctx.budget().release(Usd::from_micros(
                self.price.micros().saturating_sub(cost.micros()),
            ));
        }
        ctx.event(Event::Completed {
            images: count,
            cost,
        });
        Start::End
    }
}

//! The status endpoints: each request's phase over time, its finished reply
//! (image URLs, or inline images in `sync_mode`), and when it closes in the ledger.

use super::*;

pub(super) async fn status_t2i(
    State(sim): State<Arc<Sim>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    status(sim, Kind::TextToImage, id, headers).await
}

#[derive(serde::Deserialize)]
pub(super) struct IdQuery {
    request_id: Option<String>,
}

pub(super) async fn status_i2i(
    State(sim): State<Arc<Sim>>,
    Query(q): Query<IdQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let from_body = serde_json::from_slice::<Value>(&body).ok().and_then(|v| {
        v.get("request_id")
            .and_then(Value::as_str)
            .map(String::from)
    });
    match from_body.or(q.request_id) {
        Some(id) => status(sim, Kind::ImageToImage, id, headers).await,
        None => reject(
            &sim,
            Kind::ImageToImage,
            StatusCode::BAD_REQUEST,
            code::VALIDATION_ERROR,
            "Missing required parameter: request_id",
        ),
    }
}

pub(super) async fn status(sim: Arc<Sim>, kind: Kind, id: String, headers: HeaderMap) -> Response {
    let cfg = sim.cfg();
    let calls = sim.count(|l| &mut l.status_calls);
    if let Some(refused) = gate(
        &sim,
        kind,
        &headers,
        (
            cfg.status_redirect_rate,
            "status-redirect",
            "status_redirect",
        ),
        calls,
    ) {
        return refused;
    }
    let (polls, phase) = {
        let mut st = sim.lock();
        let Some(job) = st.jobs.get_mut(&id).filter(|j| j.kind == kind) else {
            drop(st);
            return reject(
                &sim,
                kind,
                StatusCode::NOT_FOUND,
                code::NOT_FOUND,
                "Operation not found",
            );
        };
        job.polls += 1;
        let now = Instant::now();
        let phase = if now < job.processing_at {
            Phase::Queued
        } else if now < job.done_at {
            Phase::Processing
        } else {
            Phase::Completed
        };
        (job.polls, phase)
    };
    if sim.chance(cfg.status_5xx_rate, &format!("status-5xx:{id}"), polls) {
        return injected_500(&sim, kind, "status_5xx");
    }
    if sim.chance(cfg.oversized_rate, &format!("oversized:{id}"), polls) {
        sim.lock().count_fault("oversized");
        return Json(Reply {
            request_id: Some(id),
            status: Some(Phase::Processing.as_str().into()),
            description: Some("x".repeat(OVERSIZED_BYTES)),
            ..Reply::default()
        })
        .into_response();
    }
    if phase != Phase::Completed {
        let word = status_word(&sim, &id, phase);
        return Json(Reply {
            request_id: Some(id),
            status: Some(word),
            ..Reply::default()
        })
        .into_response();
    }
    Json(finished_reply(&sim, &id).await).into_response()
}

/// Mixed shape: some requests spell status words in lower or title case.
pub(super) fn status_word(sim: &Sim, id: &str, phase: Phase) -> String {
    let word = phase.as_str();
    if sim.cfg().status_shape != StatusShape::Mixed {
        return word.into();
    }
    match Sha256::digest(id.as_bytes())[0] % 3 {
        0 => word.into(),
        1 => word.to_ascii_lowercase(),
        _ => word[..1].to_string() + &word[1..].to_ascii_lowercase(),
    }
}

/// The reply for a finished request; delivering a terminal reply (or its
/// inline images) may close the request in the ledger.
pub(super) async fn finished_reply(sim: &Arc<Sim>, id: &str) -> Reply {
    let cfg = sim.cfg();
    let (outcome, format, count, sync, spec) = {
        let st = sim.lock();
        let job = &st.jobs[id];
        (
            job.outcome,
            job.picture.format,
            job.served,
            job.sync,
            job.picture.clone(),
        )
    };
    let word = |p: Phase| status_word(sim, id, p);
    match outcome {
        Outcome::Failed | Outcome::Error => {
            let mut st = sim.lock();
            close(&mut st, id, outcome);
            let (phase, message) = if outcome == Outcome::Failed {
                (
                    Phase::Failed,
                    "Generation failed: the output did not pass the safety checker",
                )
            } else {
                (Phase::Error, "System error: the request was not processed")
            };
            drop(st);
            Reply {
                request_id: Some(id.to_string()),
                status: Some(word(phase)),
                error: Some(wire::ErrorField::Text(sim.echoed(message))),
                ..Reply::default()
            }
        }
        Outcome::Completed => {
            let urls: Vec<String> = if sync {
                let images = tokio::task::spawn_blocking(move || {
                    (0..count).map(|n| spec.nth(n).encode()).collect::<Vec<_>>()
                })
                .await
                .expect("render task");
                let mut st = sim.lock();
                let uris = images
                    .iter()
                    .enumerate()
                    .map(|(n, bytes)| {
                        st.ledger.bytes_served += bytes.len() as u64;
                        st.ledger
                            .files
                            .insert(format!("data:{id}/{n}"), hex(&Sha256::digest(bytes)));
                        format!(
                            "data:{};base64,{}",
                            format.mime(),
                            base64::engine::general_purpose::STANDARD.encode(bytes)
                        )
                    })
                    .collect();
                close(&mut st, id, outcome);
                uris
            } else {
                // Told it finished: no longer in flight, though its files
                // are still to be taken.
                told(&mut sim.lock(), id);
                (0..count as usize)
                    .map(|n| sim.image_url(id, n, format))
                    .collect()
            };
            let workflow = match cfg.status_shape {
                StatusShape::Workflow => true,
                StatusShape::Images => false,
                StatusShape::Mixed => Sha256::digest(id.as_bytes())[1] % 2 == 0,
            };
            if workflow {
                Reply {
                    request_id: Some(id.to_string()),
                    status: Some(word(Phase::Completed)),
                    output: Some(Output { media_url: urls }),
                    ..Reply::default()
                }
            } else {
                Reply {
                    images: Some(
                        urls.into_iter()
                            .enumerate()
                            .map(|(n, url)| WireImage {
                                url,
                                // As in the vendor's sample: not to be trusted.
                                file_name: Some(format!("output-{n}.png")),
                                content_type: Some("image/png".into()),
                            })
                            .collect(),
                    ),
                    description: Some(String::new()),
                    ..Reply::default()
                }
            }
        }
    }
}

/// The client has been told the request finished: it is no longer in
/// flight (counted once).
pub(super) fn told(st: &mut SimState, id: &str) {
    if let Some(job) = st.jobs.get_mut(id) {
        if !job.told {
            job.told = true;
            st.ledger.in_flight -= 1;
        }
    }
}

/// Marks a request finished for the client, its result taken (counted once).
pub(super) fn close(st: &mut SimState, id: &str, outcome: Outcome) {
    told(st, id);
    if let Some(job) = st.jobs.get_mut(id) {
        if job.open {
            job.open = false;
            match outcome {
                Outcome::Completed => st.ledger.completed += 1,
                Outcome::Failed => st.ledger.failed += 1,
                Outcome::Error => st.ledger.errored += 1,
            }
        }
    }
}

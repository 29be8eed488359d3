//! The image files a finished request names, with download faults
//! (5xx, truncation), and the ledger for tests (`/admin/ledger`).

use super::status::close;
use super::*;

pub(super) async fn file(
    State(sim): State<Arc<Sim>>,
    UrlPath((id, name)): UrlPath<(String, String)>,
) -> Response {
    let cfg = sim.cfg();
    // Made before the state is locked (the echo reads it).
    let missing = sim.echoed("no such file");
    let not_found = || (StatusCode::NOT_FOUND, missing.clone()).into_response();
    let Some(n) = name.split('.').next().and_then(|s| s.parse::<usize>().ok()) else {
        return not_found();
    };
    let (attempt, spec, draws) = {
        let mut st = sim.lock();
        st.ledger.download_calls += 1;
        let Some(job) = st.jobs.get_mut(&id) else {
            return not_found();
        };
        if job.outcome != Outcome::Completed
            || n >= job.served as usize
            || Instant::now() < job.done_at
        {
            return not_found();
        }
        job.download_attempts[n] += 1;
        let draws = format!("{}/{name}", job.draws);
        (job.download_attempts[n], job.picture.nth(n as u32), draws)
    };
    if cfg.download_delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(cfg.download_delay_ms)).await;
    }
    let path = format!("/files/{id}/{name}");
    if sim.chance(
        cfg.download_5xx_rate,
        &format!("download-5xx:{draws}"),
        attempt,
    ) {
        sim.lock().count_fault("download_5xx");
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            sim.echoed("internal error"),
        )
            .into_response();
    }
    let truncate = sim.chance(cfg.truncate_rate, &format!("truncate:{draws}"), attempt);
    let format = spec.format;
    let mut bytes = tokio::task::spawn_blocking(move || spec.encode())
        .await
        .expect("render task");
    {
        let mut st = sim.lock();
        if truncate {
            st.count_fault("truncated");
            bytes.truncate(bytes.len() / 2);
        } else {
            st.ledger.files.insert(path, hex(&Sha256::digest(&bytes)));
            let job = st.jobs.get_mut(&id).expect("job exists");
            if let Some(d) = job.delivered.get_mut(n) {
                *d = true;
            }
            if job.delivered.iter().all(|d| *d) {
                close(&mut st, &id, Outcome::Completed);
            }
        }
        st.ledger.bytes_served += bytes.len() as u64;
    }
    ([(header::CONTENT_TYPE, format.mime())], bytes).into_response()
}

pub(super) async fn ledger(State(sim): State<Arc<Sim>>) -> Json<Ledger> {
    Json(sim.lock().ledger.clone())
}

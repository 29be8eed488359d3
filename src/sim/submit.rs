//! The submit endpoints: the documented parameter rules, charging, and the
//! faults a submit can meet (refusals, 5xx, hangs, redirects, lost replies).

use super::status::finished_reply;
use super::*;
use crate::vocab::Code;

pub(super) async fn submit_t2i(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    submit(sim, Kind::TextToImage, headers, body).await
}

pub(super) async fn submit_i2i(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    submit(sim, Kind::ImageToImage, headers, body).await
}

pub(super) async fn submit(sim: Arc<Sim>, kind: Kind, headers: HeaderMap, body: Bytes) -> Response {
    let cfg = sim.cfg();
    let calls = sim.count(|l| &mut l.submit_calls);
    if let Some(refused) = gate(
        &sim,
        kind,
        &headers,
        (
            cfg.submit_redirect_rate,
            "submit-redirect",
            "submit_redirect",
        ),
        calls,
    ) {
        return refused;
    }
    if let Some(refused) = limited(&sim, kind, &cfg) {
        return refused;
    }
    let json: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => {
            let code = validation_code(kind);
            return reject(
                &sim,
                kind,
                StatusCode::BAD_REQUEST,
                code,
                "Request body is not valid JSON",
            );
        }
    };
    let ask = match validate(kind, &json) {
        Ok(ask) => ask,
        Err(message) => {
            return reject(
                &sim,
                kind,
                StatusCode::BAD_REQUEST,
                validation_code(kind),
                &message,
            );
        }
    };
    let canonical = format!("{}:{}", kind.as_str(), json);
    let attempt = {
        let mut st = sim.lock();
        let n = st.attempts.entry(canonical.clone()).or_default();
        *n += 1;
        *n
    };
    if sim.chance(
        cfg.submit_5xx_rate,
        &format!("submit-5xx:{canonical}"),
        attempt,
    ) {
        return injected_500(&sim, kind, "submit_5xx");
    }
    let outcome = if sim.chance(cfg.error_rate, &format!("error:{canonical}"), attempt) {
        Outcome::Error
    } else if sim.chance(cfg.failed_rate, &format!("failed:{canonical}"), attempt) {
        Outcome::Failed
    } else {
        Outcome::Completed
    };
    let cost = sim.price_micros(kind) * u64::from(ask.count);
    let echo = sim.echo().map(|e| format!("{e}_")).unwrap_or_default();
    let (id, immediate) = {
        let mut st = sim.lock();
        if st.wallet_micros.is_some_and(|wallet| wallet < cost) {
            drop(st);
            return reject(
                &sim,
                kind,
                StatusCode::FORBIDDEN,
                code::INSUFFICIENT_FUNDS,
                "Insufficient wallet balance to process request",
            );
        }
        // ERROR is "not processed and not charged"; FAILED is charged (the
        // vendor is silent, so the simulator takes the costly reading).
        if outcome != Outcome::Error {
            if let Some(wallet) = st.wallet_micros.as_mut() {
                *wallet -= cost;
            }
            st.ledger.charged_usd_micros += cost;
            st.ledger.charged_images += u64::from(ask.count);
            *st.ledger.charges.entry(canonical.clone()).or_default() += 1;
        }
        st.next_id += 1;
        let prefix = match kind {
            Kind::TextToImage => "glm-image",
            Kind::ImageToImage => "glm-image-image-to-image",
        };
        let h = hex(&Sha256::digest(
            format!("{}:{}", st.next_id, canonical).as_bytes(),
        ));
        let id = format!(
            "{prefix}_{echo}{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        );
        let immediate = cfg.submit_shape != SubmitShape::Queued;
        let latency = if immediate {
            Duration::ZERO
        } else {
            sim.latency(&id)
        };
        let now = Instant::now();
        st.ledger.accepted += 1;
        st.ledger.latencies_ms.push(latency.as_millis() as u64);
        *st.ledger.submissions.entry(canonical.clone()).or_default() += 1;
        st.ledger.in_flight += 1;
        st.ledger.max_in_flight = st.ledger.max_in_flight.max(st.ledger.in_flight);
        while st.running.peek().is_some_and(|r| r.0 <= now) {
            st.running.pop();
        }
        st.running.push(std::cmp::Reverse(now + latency));
        st.ledger.max_running = st.ledger.max_running.max(st.running.len() as u64);
        st.jobs.insert(
            id.clone(),
            Job {
                kind,
                picture: ask.picture,
                served: ask.count + cfg.extra_images,
                sync: ask.sync,
                processing_at: now + latency.mul_f64(0.3),
                done_at: now + latency,
                outcome,
                polls: 0,
                draws: format!("{canonical}#{attempt}"),
                download_attempts: vec![0; (ask.count + cfg.extra_images) as usize],
                delivered: vec![false; ask.count as usize],
                open: true,
                told: false,
            },
        );
        (id, immediate)
    };
    // Accepted and charged; what the client hears may still go wrong.
    if sim.chance(
        cfg.submit_502_rate,
        &format!("submit-502:{canonical}"),
        attempt,
    ) {
        sim.lock().count_fault("submit_502");
        return proxy_page(StatusCode::BAD_GATEWAY, "502 Bad Gateway");
    }
    if sim.chance(
        cfg.submit_hang_rate,
        &format!("submit-hang:{canonical}"),
        attempt,
    ) {
        sim.lock().count_fault("submit_hang");
        let mut stopping = sim.stopping.subscribe();
        let _ = stopping.wait_for(|stop| *stop).await;
        return proxy_page(StatusCode::GATEWAY_TIMEOUT, "504 Gateway Time-out");
    }
    let mut status_url = match kind {
        Kind::TextToImage => format!("{}{}{id}", sim.base_url, wire::TEXT_TO_IMAGE_STATUS),
        Kind::ImageToImage => format!("{}{}", sim.base_url, wire::IMAGE_TO_IMAGE_STATUS),
    };
    if let Some(echo) = sim.echo() {
        status_url.push_str(&format!("?ref={echo}"));
    }
    if cfg.submit_shape == SubmitShape::CompletedId {
        return Json(Reply {
            request_id: Some(id),
            status: Some(Phase::Completed.as_str().into()),
            status_url: Some(status_url.clone()),
            response_url: Some(status_url),
            ..Reply::default()
        })
        .into_response();
    }
    if immediate {
        let mut reply = finished_reply(&sim, &id).await;
        if outcome != Outcome::Completed {
            reply.request_id = Some(id);
        }
        return Json(reply).into_response();
    }
    Json(Reply {
        request_id: Some(id),
        status: Some(Phase::Queued.as_str().into()),
        status_url: Some(status_url.clone()),
        response_url: Some(status_url),
        ..Reply::default()
    })
    .into_response()
}

/// What the limiter in front of the gateway (`--rate-limit`, `--limit-*`)
/// and the quota (`--quota`) answer a submit they refuse; `None` lets it
/// through (and counts it).
fn limited(sim: &Sim, kind: Kind, cfg: &SimConfig) -> Option<Response> {
    let mut st = sim.lock();
    if cfg
        .limit
        .quota
        .is_some_and(|quota| st.ledger.accepted >= quota)
    {
        *st.ledger
            .rejected
            .entry(Code::QuotaExceeded.as_str().into())
            .or_default() += 1;
        drop(st);
        let body = serde_json::json!({
            "statusCode": 403,
            "message": "Out of call volume quota. Quota will be replenished in 23:59:59.",
        });
        return Some((StatusCode::FORBIDDEN, Json(body)).into_response());
    }
    cfg.rate_limit?;
    if st.gate.is_none() {
        st.gate = cfg.limit.gate(cfg.rate_limit);
    }
    let verdict = st.gate.as_mut()?.check(Instant::now());
    let limit::Verdict::Refuse { retry_after_secs } = verdict else {
        return None;
    };
    *st.ledger
        .rejected
        .entry(code::RATE_LIMIT_EXCEEDED.into())
        .or_default() += 1;
    drop(st);
    let secs = retry_after_secs.max(cfg.retry_after_secs);
    let with_retry_after = cfg.limit.retry_after();
    let status =
        StatusCode::from_u16(cfg.limit.limit_status).unwrap_or(StatusCode::TOO_MANY_REQUESTS);
    let mut resp = match cfg.limit.limit_body {
        LimitBody::Json => {
            let message = match with_retry_after {
                true => format!("Rate limit exceeded. Retry after {secs} seconds."),
                false => "Rate limit exceeded.".to_string(),
            };
            error(sim, kind, status, code::RATE_LIMIT_EXCEEDED, &message)
        }
        LimitBody::Html if status == StatusCode::SERVICE_UNAVAILABLE => {
            proxy_page(status, "503 Service Temporarily Unavailable")
        }
        LimitBody::Html => proxy_page(status, "429 Too Many Requests"),
    };
    if with_retry_after {
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            secs.to_string().parse().expect("digits"),
        );
    }
    Some(resp)
}

pub(super) fn validation_code(kind: Kind) -> &'static str {
    match kind {
        Kind::TextToImage => code::INVALID_PARAMETER,
        Kind::ImageToImage => code::VALIDATION_ERROR,
    }
}

/// The gateway's documented parameter rules.
pub(super) fn validate(kind: Kind, body: &Value) -> Result<Ask, String> {
    let obj = body
        .as_object()
        .ok_or("Request body must be a JSON object")?;
    let known = crate::manifest::PARAMS;
    if let Some(k) = obj.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(format!("Unknown parameter: {k}"));
    }
    let prompt = match obj.get("prompt") {
        Some(Value::String(p)) if !p.trim().is_empty() => p.clone(),
        _ => return Err("Missing required parameter: prompt".into()),
    };
    let positive = |name: &str, default: u64| -> Result<u64, String> {
        match obj.get(name) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .filter(|n| *n > 0)
                .ok_or(format!("Invalid {name} value: {v}")),
        }
    };
    let steps = positive("num_inference_steps", 30)?;
    let count = positive("num_images", 1)?;
    if steps > 1000 || count > 16 {
        return Err("num_inference_steps or num_images out of range".into());
    }
    if let Some(v) = obj.get("guidance_scale") {
        if !v.is_number() {
            return Err(format!("Invalid guidance_scale value: {v}"));
        }
    }
    let seed = match obj.get("seed") {
        None => 0,
        Some(v) => v.as_u64().ok_or(format!("Invalid seed value: {v}"))?,
    };
    for flag in [
        "enable_safety_checker",
        "sync_mode",
        "enable_prompt_expansion",
    ] {
        if obj.get(flag).is_some_and(|v| !v.is_boolean()) {
            return Err(format!("Invalid {flag} value: {}", obj[flag]));
        }
    }
    let format = match obj.get("output_format").map(|v| v.as_str()) {
        None | Some(Some("jpeg")) => ImageFormat::Jpeg,
        Some(Some("png")) => ImageFormat::Png,
        Some(_) => {
            return Err(format!(
                "Invalid output_format value: {}",
                obj["output_format"]
            ))
        }
    };
    let (width, height) = match obj.get("image_size") {
        None => (1024, 1024),
        Some(Value::String(s)) if SIZE_PRESETS.contains(&s.as_str()) => {
            render::preset_size(s).expect("every preset has a size")
        }
        Some(Value::Object(o)) => {
            let side = |k: &str| {
                o.get(k)
                    .and_then(Value::as_u64)
                    .filter(|n| (16..=4096).contains(n))
                    .map(|n| n as u32)
            };
            match (side("width"), side("height"), o.len()) {
                (Some(w), Some(h), 2) => (w, h),
                _ => {
                    return Err(format!(
                        "Invalid image_size value: {}",
                        Value::Object(o.clone())
                    ))
                }
            }
        }
        Some(v) => {
            let shown = v
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| v.to_string());
            return Err(format!("Invalid image_size value: {shown}"));
        }
    };
    match (kind, obj.get("image_urls")) {
        (Kind::TextToImage, Some(_)) => {
            return Err("image_urls is not a text-to-image parameter".into())
        }
        (Kind::ImageToImage, None) => return Err("Missing required parameter: image_urls".into()),
        (Kind::ImageToImage, Some(v)) => {
            let urls = v.as_array().ok_or("image_urls must be an array")?;
            if urls.is_empty() || urls.len() > 4 {
                return Err("image_urls must hold 1 to 4 URLs".into());
            }
            for u in urls {
                let ok = u.as_str().is_some_and(|s| {
                    s.starts_with("http://")
                        || s.starts_with("https://")
                        || s.starts_with("data:image/")
                });
                if !ok {
                    return Err(format!("Invalid image URL: {u}"));
                }
            }
        }
        (Kind::TextToImage, None) => {}
    }
    let guidance = obj
        .get("guidance_scale")
        .and_then(Value::as_f64)
        .unwrap_or(3.5);
    // The condition images count as part of what is drawn (a data URI by its hash).
    let context = match obj.get("image_urls") {
        Some(v) => hex(&Sha256::digest(v.to_string().as_bytes())),
        None => String::new(),
    };
    Ok(Ask {
        picture: render::Picture {
            prompt,
            context,
            seed,
            width,
            height,
            format,
            steps: steps as u32,
            guidance,
        },
        count: count as u32,
        sync: obj.get("sync_mode") == Some(&Value::Bool(true)),
    })
}

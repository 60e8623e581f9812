//! `history` (Switchboard only): what history rooms cost.
//!
//! 1. *Retained messages*: one client publishes `--fill-messages` messages of `--size` bytes to
//!    each of `--fill-rooms` history rooms; the server's RSS before and after, over the messages
//!    retained, is the memory one retained message costs.
//! 2. *Recovery*: one room gets `--messages` messages; `--clients` connections are opened, then
//!    every one subscribes at the same moment with `recover` from before those messages. Reported:
//!    the time until every client has all of them (and each client's own time, p50/p99), how
//!    many were recovered and how many were refused or cut off (there must be none), and the
//!    server's CPU time for the recovery.
//!
//! The server must make `<room-prefix>*` history rooms keeping at least `--messages` messages.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::{future::join_all, SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{Barrier, Semaphore};
use tokio_tungstenite::{tungstenite::Message, MaybeTlsStream, WebSocketStream};

use crate::{error::Error, sys, HistoryArgs};

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// Runs the scenario; its result as one JSON object.
pub(crate) async fn run(args: &HistoryArgs) -> Result<Value, Error> {
    let pids: Vec<u32> = args
        .server_pid
        .as_ref()
        .map(|p| p.0.clone())
        .unwrap_or_default();
    let sum = |f: &dyn Fn(u32) -> crate::error::Result<u64>| -> Result<Option<u64>, Error> {
        if pids.is_empty() {
            return Ok(None);
        }
        let mut total = 0;
        for &p in &pids {
            total += f(p)?;
        }
        Ok(Some(total))
    };
    let rss = || sum(&sys::rss_kib);
    let cpu = || sum(&|p| sys::cpu_ns("--server-pid", p));
    let urls: Vec<&str> = args.url.split(',').map(str::trim).collect();
    let payload = "x".repeat(args.size);
    let mut publisher = open(urls[0]).await?;

    // 1. Retained messages.
    let mut retained = Value::Null;
    if args.fill_rooms > 0 && args.fill_messages > 0 {
        let before = rss()?;
        for m in 0..args.fill_messages {
            for r in 0..args.fill_rooms {
                let room = format!("{}fill-{r}", args.room_prefix);
                let frame = json!({"op":"publish","room":room,"data":{"p":payload,"m":m}});
                send(&mut publisher, &frame).await?;
            }
            sync(&mut publisher).await?;
        }
        // The hub counts nothing until its next sweep; RSS is what matters here.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = rss()?;
        let messages = args.fill_rooms * args.fill_messages;
        retained = json!({
            "rooms": args.fill_rooms,
            "messages": messages,
            "rss_before_kib": before,
            "rss_after_kib": after,
            "bytes_per_message": before.zip(after).map(|(b, a)| {
                ((a as f64 - b as f64) * 1024.0 / messages as f64).round()
            }),
        });
    }

    // 2. Recovery.
    let room = format!("{}recover", args.room_prefix);
    send(
        &mut publisher,
        &json!({"op":"subscribe","room":room,"id":1}),
    )
    .await?;
    let ack = reply(&mut publisher, 1).await?;
    let epoch = ack["epoch"]
        .as_str()
        .ok_or_else(|| Error(format!("{room} is no history room: {ack}")))?
        .to_owned();
    let from = ack["offset"].as_u64().unwrap_or(0);
    send(
        &mut publisher,
        &json!({"op":"unsubscribe","room":room,"id":2}),
    )
    .await?;
    reply(&mut publisher, 2).await?;
    for i in 0..args.messages {
        let frame = json!({"op":"publish","room":room,"data":{"p":payload,"i":i}});
        send(&mut publisher, &frame).await?;
    }
    sync(&mut publisher).await?;

    let rss_idle = rss()?;
    let limit = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let mut clients = Vec::with_capacity(args.clients);
    for chunk in (0..args.clients).collect::<Vec<_>>().chunks(500) {
        let opened = join_all(chunk.iter().map(|&i| {
            let limit = limit.clone();
            let url = urls[i % urls.len()];
            async move {
                let _permit = limit.acquire().await;
                open(url).await
            }
        }))
        .await;
        for c in opened {
            clients.push(c?);
        }
    }
    let rss_connected = rss()?;
    let barrier = Arc::new(Barrier::new(args.clients + 1));
    let cpu_before = cpu()?;
    let expected = args.messages;
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            let barrier = barrier.clone();
            let (room, epoch) = (room.clone(), epoch.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let started = Instant::now();
                let frame = json!({"op":"subscribe","room":room,"id":1,
                    "recover":{"epoch":epoch,"offset":from}});
                send(&mut c, &frame).await?;
                let ack = reply(&mut c, 1).await?;
                if ack["recovered"] != true {
                    return Ok::<_, Error>(Err(format!("not recovered: {ack}")));
                }
                let mut got = 0;
                while got < expected {
                    let frame = next(&mut c).await?;
                    if frame["op"] == "message" {
                        got += 1;
                    } else {
                        return Ok(Err(format!("unexpected frame: {frame}")));
                    }
                }
                Ok(Ok(started.elapsed()))
            })
        })
        .collect();
    barrier.wait().await;
    let started = Instant::now();
    let mut times = Vec::with_capacity(args.clients);
    let mut failed = Vec::new();
    for task in tasks {
        match task.await {
            Ok(Ok(Ok(t))) => times.push(t),
            Ok(Ok(Err(why))) => failed.push(why),
            Ok(Err(e)) => failed.push(e.0),
            Err(e) => failed.push(e.to_string()),
        }
    }
    let total = started.elapsed();
    let cpu_after = cpu()?;
    times.sort();
    let pct = |p: f64| -> f64 {
        times
            .get(((times.len() as f64 * p) as usize).min(times.len().saturating_sub(1)))
            .map_or(0.0, |t| (t.as_secs_f64() * 1000.0 * 10.0).round() / 10.0)
    };
    failed.truncate(5);
    Ok(json!({
        "scenario": "history",
        "retained": retained,
        "recovery": {
            "nodes": urls.len(),
            "clients": args.clients,
            "messages_each": args.messages,
            "recovered": times.len(),
            "failed": args.clients - times.len(),
            "failures": failed,
            "seconds": (total.as_secs_f64() * 1000.0).round() / 1000.0,
            "client_ms_p50": pct(0.5),
            "client_ms_p99": pct(0.99),
            "deliveries_per_s": ((times.len() as u64 * expected) as f64 / total.as_secs_f64()).round(),
            "server_cpu_s": cpu_before.zip(cpu_after).map(|(b, a)| (a - b) as f64 / 1e9),
            "rss_per_conn_kib": rss_idle.zip(rss_connected).map(|(b, a)| {
                ((a as f64 - b as f64) / args.clients as f64 * 100.0).round() / 100.0
            }),
        },
    }))
}

async fn open(url: &str) -> Result<Socket, Error> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(|e| Error(format!("connecting to {url}: {e}")))?;
    let welcome = next(&mut ws).await?;
    if welcome["op"] != "welcome" {
        return Err(Error(format!("expected welcome, got {welcome}")));
    }
    Ok(ws)
}

async fn send(ws: &mut Socket, frame: &Value) -> Result<(), Error> {
    ws.send(Message::text(frame.to_string()))
        .await
        .map_err(|e| Error(format!("send: {e}")))
}

/// The next JSON frame (pings answered by the library, control frames skipped).
async fn next(ws: &mut Socket) -> Result<Value, Error> {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .map_err(|_| Error("no frame within 30 s".into()))?
            .ok_or_else(|| Error("the connection ended".into()))?
            .map_err(|e| Error(format!("receive: {e}")))?;
        match m {
            Message::Text(t) => {
                return serde_json::from_str(&t).map_err(|e| Error(format!("JSON: {e}")))
            }
            Message::Close(c) => return Err(Error(format!("closed: {c:?}"))),
            _ => continue,
        }
    }
}

/// The answer to request `id`, skipping deliveries.
async fn reply(ws: &mut Socket, id: u64) -> Result<Value, Error> {
    loop {
        let f = next(ws).await?;
        if f["id"] == id {
            if f["op"] == "error" {
                return Err(Error(format!("request {id} failed: {f}")));
            }
            return Ok(f);
        }
    }
}

/// Waits until everything sent before has been handled (a ping's pong comes after).
async fn sync(ws: &mut Socket) -> Result<(), Error> {
    send(ws, &json!({"op":"ping","id":424242})).await?;
    loop {
        let f = next(ws).await?;
        if f["op"] == "pong" {
            return Ok(());
        }
        if f["op"] == "error" {
            return Err(Error(format!("a publish failed: {f}")));
        }
    }
}

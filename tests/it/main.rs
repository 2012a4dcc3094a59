//! Integration tests: the real server on 127.0.0.1:0, real WebSocket clients.
//! One test binary (faster to build and link than one per file).

#[macro_use]
mod store;
mod accounts;
mod accounts_nodes;
mod auth;
mod bursts;
mod common;
mod db_restart;
mod db_tls;
mod deflate;
mod demo;
mod fastchat;
mod files;
mod handshake;
mod http;
mod lifecycle;
mod metrics;
mod mysql_harness;
mod native;
mod outage;
mod pg_harness;
mod redis;
mod redis_harness;
mod relay;
mod s3_harness;
mod shared_history;
mod slow_clients;
mod throttle;
mod tls;

//! What an idle connection costs: the session task's future is the bulk of it, and
//! every field added to a session is paid once per connection.

mod common;

use common::TestServer;
use courier_gateway::connection::session;
use courier_gateway::metrics::Transport;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_future_stays_small() {
    let t = TestServer::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
    let (client, accepted) = tokio::join!(client, listener.accept());
    let (stream, _) = accepted.unwrap();
    let (reader, writer) = stream.into_split();
    let future = session::run(
        reader,
        writer,
        t.server.connections().clone(),
        CancellationToken::new(),
        TaskTracker::new(),
        Transport::Tcp,
    );
    let size = std::mem::size_of_val(&future);
    println!("session future: {size} bytes");
    assert!(size <= 2_560, "the session future grew to {size} bytes");
    drop(future);
    drop(client);
    t.stop().await;
}

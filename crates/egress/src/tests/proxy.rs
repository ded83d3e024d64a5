//! A minimal HTTP forward proxy on loopback for the proxy-member tests. It
//! handles CONNECT and absolute-form requests, connects upstream from a
//! chosen loopback source address, and refuses any non-loopback target.

use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// Starts the proxy; its upstream connections come from `source`.
pub async fn start(source: IpAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(relay(client, source));
        }
    });
    addr
}

async fn relay(mut client: TcpStream, source: IpAddr) -> std::io::Result<()> {
    let mut buffer = Vec::new();
    let head_end = loop {
        let mut chunk = [0; 4096];
        let read = client.read(&mut chunk).await?;
        if read == 0 {
            return Ok(());
        }
        buffer.extend_from_slice(&chunk[..read]);
        if let Some(position) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            break position + 4;
        }
        assert!(buffer.len() < 64 * 1024, "request head too long");
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let (request_line, rest_of_head) = head.split_once("\r\n").unwrap();
    let mut parts = request_line.split(' ');
    let (method, target, version) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );

    if method == "CONNECT" {
        let mut upstream = connect_from(source, target).await?;
        client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await?;
        upstream.write_all(&buffer[head_end..]).await?;
        tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
        return Ok(());
    }
    let url = url::Url::parse(target).unwrap();
    let authority = format!(
        "{}:{}",
        url.host_str().unwrap(),
        url.port_or_known_default().unwrap()
    );
    let origin_form = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    };
    let mut upstream = connect_from(source, &authority).await?;
    upstream
        .write_all(format!("{method} {origin_form} {version}\r\n{rest_of_head}").as_bytes())
        .await?;
    upstream.write_all(&buffer[head_end..]).await?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

async fn connect_from(source: IpAddr, authority: &str) -> std::io::Result<TcpStream> {
    let target: SocketAddr = authority
        .parse()
        .expect("tests address the proxy with IP literals");
    assert!(
        target.ip().is_loopback(),
        "the test proxy only connects to loopback"
    );
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(target).await
}

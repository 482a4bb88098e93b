use super::*;

fn settings(keep: usize) -> ReaderSettings {
    ReaderSettings {
        device: Arc::from("p1"),
        target: "test".into(),
        clock: crate::host::clock::system(),
        timeout: Duration::from_secs(5),
        max_telegram_size: 8192,
        keep,
        totals: Default::default(),
        keys: None,
        serve: None,
    }
}

#[tokio::test]
async fn keeps_the_newest_drops_bad_and_reports_the_end() {
    let (mut tx, rx) = tokio::io::duplex(1 << 16);
    let reader = Reader::spawn(Box::new(rx), settings(1));
    use tokio::io::AsyncWriteExt;
    tx.write_all(b"/A\r\n\r\n1-0:1.8.1(1*kWh)\r\n!\r\n/A\r\n\r\n1-0:1.8.1(2*kWh)\r\n!\r\n/A\r\n\r\n1-0:1.8.1(3*kWh)\r\n!0000\r\n")
        .await
        .unwrap();
    // The third has a wrong CRC: the newest good one is the second.
    let (frames, _) = reader.next().await.unwrap();
    let last = frames.last().unwrap().frame.decode().unwrap();
    assert_eq!(frames.len(), 1);
    assert_eq!(last.number("energy_delivered_tariff1"), Some(2.0));
    drop(tx);
    let err = reader.next().await.unwrap_err();
    assert!(err.message().contains("link closed"), "{err}");
}

fn encrypted(keys: &Keys, counter: u32, kwh: u32) -> Vec<u8> {
    let telegram = format!("/SAG5\\2\r\n\r\n1-0:1.8.0({kwh}*kWh)\r\n!\r\n");
    crate::protocols::dlms::cipher::encrypt(keys, *b"SAG00001", 0x30, counter, telegram.as_bytes())
}

#[tokio::test]
async fn an_encrypted_stream_reads_like_a_plain_one_and_a_wrong_key_is_counted() {
    use tokio::io::AsyncWriteExt;
    let keys = Keys::from_hex(&"5A".repeat(16), None).unwrap();
    let wrong = Keys::from_hex(&"A5".repeat(16), None).unwrap();
    let (mut tx, rx) = tokio::io::duplex(1 << 16);
    let mut s = settings(8);
    s.keys = Some(keys.clone());
    let totals = s.totals.clone();
    let reader = Reader::spawn(Box::new(rx), s);
    let stream = [encrypted(&keys, 1, 1), encrypted(&wrong, 2, 2), encrypted(&keys, 3, 3)].concat();
    tx.write_all(&stream).await.unwrap();
    let mut values = Vec::new();
    while values.len() < 2 {
        let (frames, _) = reader.next().await.unwrap();
        values.extend(
            frames
                .iter()
                .map(|r| r.frame.decode().unwrap().number("energy_delivered_total")),
        );
    }
    assert_eq!(values, [Some(1.0), Some(3.0)]);
    assert_eq!(totals.decrypt.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert!(totals.wrong_key_logged.load(std::sync::atomic::Ordering::Relaxed));
}

#[tokio::test(start_paused = true)]
async fn a_wrong_key_ends_the_link_with_a_hint() {
    use tokio::io::AsyncWriteExt;
    let (mut tx, rx) = tokio::io::duplex(1 << 16);
    let mut s = settings(1);
    s.keys = Some(Keys::from_hex(&"5A".repeat(16), None).unwrap());
    let reader = Reader::spawn(Box::new(rx), s);
    let wrong = Keys::from_hex(&"A5".repeat(16), None).unwrap();
    tx.write_all(&encrypted(&wrong, 1, 1)).await.unwrap();
    let err = reader.next().await.unwrap_err();
    assert!(
        err.message().contains("none decrypted in 5s (wrong decryption_key?)"),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_silent_link_ends_after_the_timeout() {
    let (_tx, rx) = tokio::io::duplex(64);
    let reader = Reader::spawn(Box::new(rx), settings(1));
    let err = reader.next().await.unwrap_err();
    assert!(err.message().contains("silent for 5s"), "{err}");
}

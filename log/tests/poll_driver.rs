//! The same log on compio's epoll ("polling") driver, the fallback used where io_uring
//! is blocked (e.g. Docker's default seccomp profile).

mod common;

use common::*;
use compio::driver::{DriverType, ProactorBuilder};
use spate_log::{LogConfig, PartitionLog};

#[test]
fn round_trip_on_polling_driver() {
    let mut proactor = ProactorBuilder::new();
    proactor.driver_type(DriverType::Poll);
    let rt = compio::runtime::Runtime::builder()
        .with_proactor(proactor)
        .build()
        .unwrap();
    assert_eq!(rt.driver_type(), DriverType::Poll);
    rt.block_on(async {
        let t = tempdir();
        let dir = t.path().join("poll");
        let cfg = LogConfig {
            flush_messages: 1,
            ..small_config()
        };
        let log = PartitionLog::open(dir.clone(), cfg.clone()).await.unwrap();
        let futs: Vec<_> = (0..100)
            .map(|i| log.append(batch(i, 2, 1000 + i as i64, 1500)))
            .collect();
        for (i, f) in futs.into_iter().enumerate() {
            assert_eq!(f.await.unwrap().base_offset, 2 * i as i64);
        }
        assert!(log.segment_count() > 1);
        log.close().await.unwrap();
        let log = PartitionLog::open(
            dir,
            LogConfig {
                cache_bytes: 0,
                ..cfg
            },
        )
        .await
        .unwrap();
        for off in 0..200 {
            let r = log.read(off, 1, true).await.unwrap();
            assert_eq!(base_of(&r.batches[0]), off - off % 2);
        }
        assert_eq!(
            log.offset_for_timestamp(1050).await.unwrap(),
            Some((100, 1050))
        );
        log.close().await.unwrap();
    });
}

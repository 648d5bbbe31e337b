//! Reactions against a real gateway: events to every device, counts in history
//! and sync, who-reacted pages, the rules (membership, events, recalled messages,
//! the number of kinds), and a storm on one message of a 1,000-member group that
//! goes out as a few coalesced events instead of a thousand.

mod common;

use std::time::Instant;

use common::{next_message, TestServer};
use courier_sdk::pb::{self, message_body::Content, system_event::Event as SysEvent};
use courier_sdk::{ConversationId, ErrorCode, Event, Events, NewGroup};

/// The reaction event a message carries, if it is one.
fn reactions_of(m: &pb::Message) -> Option<pb::ReactionsChanged> {
    match m.body.as_ref()?.content.as_ref()? {
        Content::System(pb::SystemEvent {
            event: Some(SysEvent::ReactionsChanged(r)),
        }) => Some(r.clone()),
        _ => None,
    }
}

/// The counts `(emoji, count, mine)` of a message.
fn counts(m: &pb::Message) -> Vec<(String, u64, bool)> {
    m.reactions
        .iter()
        .map(|r| (r.emoji.clone(), r.count, r.mine))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reactions_reach_every_device_and_show_in_history() {
    let t = TestServer::start_with(|c| c.reaction_max_kinds = 2).await;
    let (alice, bob) = (t.user("alice").await, t.user("bob").await);
    let (a, mut a_events) = t.connect(&alice, "phone").await;
    let (_a2, mut a2_events) = t.connect(&alice, "laptop").await;
    let (b, mut b_events) = t.connect(&bob, "phone").await;
    let c = a.direct_with(bob.user_id).unwrap();
    let seq = a.send_text(&c, "lunch?").await.unwrap().seq;
    next_message(&mut b_events).await;
    next_message(&mut a2_events).await;

    let ack = b.react(&c, seq, "👍", false).await.unwrap();
    assert!(ack.changed);
    assert_eq!(ack.event_seq, seq + 1);
    for events in [&mut a_events, &mut a2_events] {
        let m = next_message(events).await;
        assert_eq!(m.seq, ack.event_seq);
        let r = reactions_of(&m).expect("a reaction event");
        assert_eq!(r.changes.len(), 1);
        assert_eq!(
            (r.changes[0].seq, r.changes[0].user_id, r.changes[0].added),
            (seq, bob.user_id, true)
        );
        assert_eq!((r.totals[0].emoji.as_str(), r.totals[0].count), ("👍", 1));
    }
    // Again: nothing changes, no event.
    let again = b.react(&c, seq, "👍", false).await.unwrap();
    assert!(!again.changed && again.event_seq == 0);
    a.react(&c, seq, "👍", false).await.unwrap();
    b.react(&c, seq, "🎉", false).await.unwrap();
    // Counts per emoji in history, each reader's own marked.
    let page = b
        .pull_history(&c, pb::Direction::Forward, seq - 1, 1)
        .await
        .unwrap();
    assert_eq!(
        counts(&page.messages[0]),
        [("🎉".into(), 1, true), ("👍".into(), 2, true)]
    );
    let page = a
        .pull_history(&c, pb::Direction::Forward, seq - 1, 1)
        .await
        .unwrap();
    assert_eq!(
        counts(&page.messages[0]),
        [("🎉".into(), 1, false), ("👍".into(), 2, true)]
    );
    // The reaction events are no news: bob read "lunch?" by reacting to nothing
    // else, and his list counts it alone as unread (not the events after it).
    assert_eq!(
        common::unread_in_list(&t.http_as(&bob), &c).await,
        1,
        "the message, not the reaction events"
    );
    // A third kind is past the limit of 2; an existing one is not.
    assert_eq!(
        a.react(&c, seq, "🍕", false).await.unwrap_err().code(),
        Some(ErrorCode::InvalidArgument)
    );
    // Taking one back.
    let back = b.react(&c, seq, "👍", true).await.unwrap();
    assert!(back.changed && back.removed);
    // Over HTTP: add (percent-encoded), the who page, the JSON history.
    let http = t.http_as(&bob);
    let added = http.react(&c, seq, "👍", true).await.unwrap();
    assert_eq!(added["changed"], true);
    let who = http.reactors(&c, seq, "👍", None, Some(1)).await.unwrap();
    let first = who["users"][0]["user_id"].as_u64().unwrap();
    assert_eq!(first, alice.user_id.min(bob.user_id));
    let rest = http
        .reactors(&c, seq, "👍", who["next_after"].as_u64(), Some(1))
        .await
        .unwrap();
    assert_eq!(
        rest["users"][0]["user_id"].as_u64().unwrap(),
        alice.user_id.max(bob.user_id)
    );
    let history = http.history_all(&c, 0).await.unwrap();
    assert_eq!(history[0].reactions.len(), 2);
    assert_eq!(
        history.last().unwrap().body["event"],
        "reactions_changed",
        "the last event is a reaction event"
    );
    // A device that syncs from its cursor learns of them; the last message of the
    // sync carries its own counts.
    let (b2, _b2e) = t.connect(&bob, "tablet").await;
    let page = b2
        .pull_history(&c, pb::Direction::Forward, seq, 10)
        .await
        .unwrap();
    assert!(page.messages.iter().all(|m| reactions_of(m).is_some()));
    assert_eq!(page.messages.len(), 5);
    // Events take no reactions; a stranger none at all; nor a recalled message.
    assert_eq!(
        a.react(&c, seq + 1, "👍", false).await.unwrap_err().code(),
        Some(ErrorCode::InvalidArgument)
    );
    assert_eq!(
        a.react(&c, seq, "", false).await.unwrap_err().code(),
        Some(ErrorCode::InvalidArgument)
    );
    let carol = t.user("carol").await;
    let (cc, _ce) = t.connect(&carol, "phone").await;
    assert_eq!(
        cc.react(&c, seq, "👍", false).await.unwrap_err().code(),
        Some(ErrorCode::Forbidden)
    );
    a.recall(&c, seq).await.unwrap();
    assert_eq!(
        b.react(&c, seq, "👍", false).await.unwrap_err().code(),
        Some(ErrorCode::NotFound)
    );
    t.stop().await;
}

/// Reaction events an observer receives until one says `emoji` on `seq` reached
/// `total`.
async fn reaction_events_until(events: &mut Events, seq: u64, total: u64) -> usize {
    let mut received = 0;
    loop {
        match tokio::time::timeout(common::WAIT, events.next()).await {
            Ok(Some(Event::Message(m))) => {
                let Some(r) = reactions_of(&m) else { continue };
                received += 1;
                if r.totals.iter().any(|t| t.seq == seq && t.count == total) {
                    return received;
                }
            }
            Ok(Some(Event::Closed)) | Ok(None) => panic!("closed"),
            Ok(Some(_)) => continue,
            Err(_) => panic!("the total never reached {total} ({received} events)"),
        }
    }
}

/// 1,000 members react to one message within a second. In a group past
/// `reaction_coalesce_members`, the changes of one window share an event: every
/// change is stored and counted, but each online device receives a handful of
/// frames, not a thousand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reaction_storm_in_a_big_group_is_coalesced() {
    const MEMBERS: u64 = 1_000;
    let t = TestServer::start_with(|c| {
        c.max_group_members = MEMBERS;
        c.reaction_window_ms = 200;
    })
    .await;
    let p = common::users(&t, "storm", 3).await;
    let g = t
        .http_as(&p[0])
        .create_group(&NewGroup {
            name: "stadium".into(),
            members: vec![p[1].user_id, p[2].user_id],
            ..NewGroup::default()
        })
        .await
        .unwrap()
        .group_id;
    let api = t.server.api();
    let bulk: Vec<u64> = (2_000_000..2_000_000 + MEMBERS - 3).collect();
    api.import_members(g, bulk.clone(), p[0].user_id)
        .await
        .unwrap();
    let c = ConversationId::Group(g);
    let (sender, mut e0) = t.connect(&p[0], "phone").await;
    let (_o1, mut e1) = t.connect(&p[1], "phone").await;
    let (_o2, mut e2) = t.connect(&p[2], "phone").await;
    let seq = sender.send_text(&c, "GOAL!").await.unwrap().seq;
    next_message(&mut e1).await;
    next_message(&mut e2).await;

    let events_before = api
        .reactions
        .events
        .load(std::sync::atomic::Ordering::Relaxed);
    let start = Instant::now();
    let reactors: Vec<u64> = bulk
        .iter()
        .copied()
        .chain(p.iter().map(|u| u.user_id))
        .collect();
    // The storm: ten waves of 100 reactions, 100 ms apart (about two windows'
    // worth of waves per event).
    let mut tasks = Vec::with_capacity(reactors.len());
    let mut waves = tokio::time::interval(std::time::Duration::from_millis(100));
    for wave in reactors.chunks(100) {
        waves.tick().await;
        for &user in wave {
            let api = api.clone();
            tasks.push(tokio::spawn(async move {
                api.react(user, &c, seq, "⚽", true).await
            }));
        }
    }
    let mut event_seqs = Vec::new();
    for task in tasks {
        let ack = task.await.unwrap().unwrap();
        assert!(ack.changed);
        event_seqs.push(ack.event_seq);
    }
    let stored_in = start.elapsed();
    event_seqs.sort_unstable();
    event_seqs.dedup();
    let log_events = event_seqs.len();
    let events = api
        .reactions
        .events
        .load(std::sync::atomic::Ordering::Relaxed)
        - events_before;
    assert_eq!(events as usize, log_events);
    // Each observer's device got exactly the coalesced events, the last with the
    // full total.
    let mut frames_out = 0;
    for events in [&mut e0, &mut e1, &mut e2] {
        let received = reaction_events_until(events, seq, MEMBERS).await;
        assert_eq!(received, log_events);
        frames_out += received;
    }
    assert!(
        log_events * 10 <= reactors.len(),
        "{} changes took {log_events} events",
        reactors.len()
    );
    let page = sender
        .pull_history(&c, pb::Direction::Forward, seq - 1, 1)
        .await
        .unwrap();
    assert_eq!(counts(&page.messages[0]), [("⚽".into(), MEMBERS, true)]);
    println!(
        "reaction storm: {} changes in, {log_events} events stored, {frames_out} frames out to \
         3 online devices ({:.1} per device; {} uncoalesced), all stored in {:.0} ms ({} build)",
        reactors.len(),
        frames_out as f64 / 3.0,
        reactors.len(),
        stored_in.as_secs_f64() * 1000.0,
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    t.stop().await;
}

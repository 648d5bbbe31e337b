//! Groups end to end: fan-out to every online device, join visibility, roles, and
//! what non-members and removed members can no longer do.

mod common;

use std::time::Instant;

use common::{next_text, users, TestServer};
use courier_sdk::pb::{self, Direction};
use courier_sdk::{ConversationId, ErrorCode, HistoryQuery, NewGroup, SdkError};

fn status(e: &SdkError) -> u16 {
    match e {
        SdkError::Http { status, .. } => *status,
        other => panic!("expected an HTTP error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_message_reaches_each_online_device_once_but_the_senders() {
    let t = TestServer::start().await;
    let people = users(&t, "m", 200).await;
    let owner = t.http_as(&people[0]);
    let group = owner
        .create_group(&NewGroup {
            name: "two hundred".into(),
            members: people[1..].iter().map(|p| p.user_id).collect(),
            ..NewGroup::default()
        })
        .await
        .unwrap();
    assert_eq!(group.member_count, 200);
    let c = ConversationId::Group(group.group_id);

    // Members 0..20 have three devices online, 20..120 one, the rest are offline.
    let mut devices = Vec::new();
    for (i, p) in people.iter().enumerate().take(120) {
        let count = if i < 20 { 3 } else { 1 };
        for d in 0..count {
            let (client, events) = t.connect(p, &format!("dev{d}")).await;
            devices.push((i, d, client, events));
        }
    }
    assert_eq!(devices.len(), 20 * 3 + 100);

    // Member 5 sends from its device 0.
    let sender = devices
        .iter()
        .position(|(i, d, ..)| (*i, *d) == (5, 0))
        .unwrap();
    let mut seqs = Vec::new();
    for n in 0..3 {
        seqs.push(
            devices[sender]
                .2
                .send_text(&c, format!("hello group {n}"))
                .await
                .unwrap()
                .seq,
        );
    }
    for (i, d, _, events) in devices.iter_mut() {
        if (*i, *d) == (5, 0) {
            continue;
        }
        for (n, seq) in seqs.iter().enumerate() {
            let m = next_text(events).await;
            assert_eq!(m.seq, *seq, "member {i} device {d}");
            assert_eq!(
                m.body.unwrap().as_text().unwrap(),
                format!("hello group {n}")
            );
            assert_eq!(m.sender, people[5].user_id);
        }
    }
    // Exactly once: nothing else is waiting anywhere, and the sending device got nothing.
    for (i, d, client, events) in devices.iter_mut() {
        client
            .pull_history(&c, Direction::Backward, 0, 1)
            .await
            .unwrap();
        while let Some(e) = events.try_next() {
            if let courier_sdk::Event::Message(m) = e {
                assert!(
                    m.body.as_ref().unwrap().as_text().is_none(),
                    "member {i} device {d} got a duplicate: {m:?}"
                );
            }
        }
    }
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_members_see_history_only_where_the_group_allows_it() {
    let t = TestServer::start().await;
    let p = users(&t, "u", 4).await;
    let owner = t.http_as(&p[0]);
    let (owner_client, _e) = t.connect(&p[0], "phone").await;
    for visible in [false, true] {
        let group = owner
            .create_group(&NewGroup {
                name: "club".into(),
                join_policy: Some("open".into()),
                history_visible: Some(visible),
                members: vec![],
            })
            .await
            .unwrap();
        let c = ConversationId::Group(group.group_id);
        for n in 0..3 {
            owner_client
                .send_text(&c, format!("early {n}"))
                .await
                .unwrap();
        }
        let joiner = if visible { &p[2] } else { &p[1] };
        let j = t.http_as(joiner);
        j.join_group(group.group_id).await.unwrap();
        owner_client.send_text(&c, "late").await.unwrap();
        let texts: Vec<String> = j
            .history_all(&c, 0)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|m| m.text)
            .collect();
        if visible {
            assert_eq!(texts, vec!["early 0", "early 1", "early 2", "late"]);
        } else {
            assert_eq!(
                texts,
                vec!["late"],
                "a member sees what came after it joined"
            );
        }
        // The join itself is in the log as a system event the joiner can read.
        let events = j.history_all(&c, 0).await.unwrap();
        assert!(events
            .iter()
            .any(|m| m.body["event"] == "member_joined" && m.body["user_id"] == joiner.user_id));
    }
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_decide_who_may_do_what() {
    let t = TestServer::start().await;
    let p = users(&t, "r", 5).await;
    let (owner, admin, member, other) = (
        t.http_as(&p[0]),
        t.http_as(&p[1]),
        t.http_as(&p[2]),
        t.http_as(&p[3]),
    );
    let g = owner
        .create_group(&NewGroup {
            name: "rules".into(),
            members: vec![p[1].user_id, p[2].user_id],
            ..NewGroup::default()
        })
        .await
        .unwrap()
        .group_id;
    // Members added at creation see the whole log, from the creation event on.
    let log = member
        .history_all(&ConversationId::Group(g), 0)
        .await
        .unwrap();
    assert_eq!(log[0].body["event"], "group_created");
    assert_eq!(log[1].body["event"], "members_added");
    // Invite-only: a member may not add, the owner may; nobody joins by id.
    assert_eq!(
        status(&member.add_members(g, &[p[3].user_id]).await.unwrap_err()),
        403
    );
    assert_eq!(status(&other.join_group(g).await.unwrap_err()), 404);
    owner.set_role(g, p[1].user_id, "admin").await.unwrap();
    assert_eq!(
        status(&admin.set_role(g, p[2].user_id, "admin").await.unwrap_err()),
        403
    );
    let added = admin
        .add_members(g, &[p[3].user_id, p[2].user_id])
        .await
        .unwrap();
    assert_eq!(
        (added.added, added.already_members),
        (vec![p[3].user_id], vec![p[2].user_id])
    );
    // Admins remove plain members, not the owner or other admins.
    assert_eq!(
        status(&admin.remove_member(g, p[0].user_id).await.unwrap_err()),
        403
    );
    admin.remove_member(g, p[3].user_id).await.unwrap();
    assert_eq!(
        status(&member.remove_member(g, p[1].user_id).await.unwrap_err()),
        403
    );
    // The owner cannot leave before handing over.
    assert_eq!(status(&owner.leave_group(g).await.unwrap_err()), 403);
    owner.transfer_group(g, p[1].user_id).await.unwrap();
    assert_eq!(admin.group(g).await.unwrap().owner, p[1].user_id);
    owner.leave_group(g).await.unwrap();
    let info = admin
        .update_group(g, Some("renamed"), None, None)
        .await
        .unwrap();
    assert_eq!((info.name.as_str(), info.member_count), ("renamed", 2));
    assert_eq!(
        status(
            &member
                .update_group(g, Some("mine now"), None, None)
                .await
                .unwrap_err()
        ),
        403
    );
    // Members page through the list; roles are shown.
    let page = member.members(g, None, Some(1)).await.unwrap();
    assert_eq!(page.members.len(), 1);
    let rest = member.members(g, page.next_after, Some(10)).await.unwrap();
    assert_eq!(rest.members.len(), 1);
    let roles: Vec<String> = page
        .members
        .iter()
        .chain(&rest.members)
        .map(|m| m.role.clone())
        .collect();
    assert!(roles.contains(&"owner".to_string()) && roles.contains(&"member".to_string()));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outsiders_are_refused_everywhere() {
    let t = TestServer::start().await;
    let p = users(&t, "o", 3).await;
    let owner = t.http_as(&p[0]);
    let g = owner
        .create_group(&NewGroup {
            name: "private".into(),
            members: vec![p[1].user_id],
            ..NewGroup::default()
        })
        .await
        .unwrap()
        .group_id;
    let c = ConversationId::Group(g);
    let outsider = t.http_as(&p[2]);
    assert_eq!(
        status(
            &outsider
                .history(&c, HistoryQuery::default())
                .await
                .unwrap_err()
        ),
        403
    );
    assert_eq!(
        status(&outsider.members(g, None, None).await.unwrap_err()),
        403
    );
    assert_eq!(status(&outsider.mark_read(&c, 1).await.unwrap_err()), 403);
    assert_eq!(status(&outsider.group(g).await.unwrap_err()), 404);
    let (client, _e) = t.connect(&p[2], "phone").await;
    assert_eq!(
        client.send_text(&c, "let me in").await.unwrap_err().code(),
        Some(ErrorCode::Forbidden)
    );
    assert_eq!(
        client
            .pull_history(&c, Direction::Backward, 0, 5)
            .await
            .unwrap_err()
            .code(),
        Some(ErrorCode::Forbidden)
    );
    let missing = ConversationId::Group(987_654);
    assert_eq!(
        status(
            &outsider
                .history(&missing, HistoryQuery::default())
                .await
                .unwrap_err()
        ),
        404
    );
    assert_eq!(
        client.send_text(&missing, "hi").await.unwrap_err().code(),
        Some(ErrorCode::UnknownConversation)
    );
    // A 1:1 conversation of two others is as closed.
    let theirs = ConversationId::direct(p[0].user_id, p[1].user_id).unwrap();
    assert_eq!(
        status(
            &outsider
                .history(&theirs, HistoryQuery::default())
                .await
                .unwrap_err()
        ),
        403
    );
    assert_eq!(
        status(&outsider.mark_read(&theirs, 1).await.unwrap_err()),
        403
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_stops_receiving_at_once() {
    let t = TestServer::start().await;
    let p = users(&t, "k", 3).await;
    let owner = t.http_as(&p[0]);
    let g = owner
        .create_group(&NewGroup {
            name: "kick".into(),
            members: vec![p[1].user_id, p[2].user_id],
            ..NewGroup::default()
        })
        .await
        .unwrap()
        .group_id;
    let c = ConversationId::Group(g);
    let (sender, _se) = t.connect(&p[0], "phone").await;
    let (kicked, mut kicked_events) = t.connect(&p[1], "phone").await;
    let (_stays, mut stays_events) = t.connect(&p[2], "phone").await;
    sender.send_text(&c, "before").await.unwrap();
    assert_eq!(
        next_text(&mut kicked_events).await.body.unwrap().as_text(),
        Some("before")
    );
    next_text(&mut stays_events).await;

    owner.remove_member(g, p[1].user_id).await.unwrap();
    sender.send_text(&c, "after").await.unwrap();
    assert_eq!(
        next_text(&mut stays_events).await.body.unwrap().as_text(),
        Some("after")
    );
    // A round trip on the removed member's connection: anything queued for it before
    // this answer would have been read first. It gets its removal notice, no message.
    let err = kicked
        .pull_history(&c, Direction::Backward, 0, 5)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Forbidden));
    let mut saw_removal = false;
    while let Some(e) = kicked_events.try_next() {
        if let courier_sdk::Event::Message(m) = e {
            match m.body.as_ref().and_then(|b| b.content.as_ref()) {
                Some(pb::message_body::Content::System(_)) => saw_removal = true,
                other => panic!("removed member still received {other:?}"),
            }
        }
    }
    assert!(saw_removal, "the removed member learns of its removal");
    assert_eq!(
        kicked
            .send_text(&c, "still here?")
            .await
            .unwrap_err()
            .code(),
        Some(ErrorCode::Forbidden)
    );
    t.stop().await;
}

/// Fan-out of one message to a 2,000-member group, everyone online on one device.
/// Prints the time from send to the last member's receipt (a figure, not a test
/// condition); checks that every member gets it exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_to_two_thousand_online_members() {
    const MEMBERS: usize = 2000;
    let t = TestServer::start().await;
    let people = users(&t, "f", MEMBERS).await;
    let owner = t.http_as(&people[0]);
    let g = owner
        .create_group(&NewGroup {
            name: "stadium".into(),
            members: people[1..].iter().map(|p| p.user_id).collect(),
            ..NewGroup::default()
        })
        .await
        .unwrap()
        .group_id;
    let c = ConversationId::Group(g);
    let mut receivers = Vec::new();
    for p in &people[1..] {
        let (client, events) = t.connect(p, "phone").await;
        receivers.push((client, events));
    }
    let (sender, _e) = t.connect(&people[0], "phone").await;
    let mut waits = Vec::new();
    let start = Instant::now();
    for (client, mut events) in receivers.drain(..) {
        waits.push(tokio::spawn(async move {
            let m = next_text(&mut events).await;
            (m.seq, Instant::now(), (client, events))
        }));
    }
    let seq = sender.send_text(&c, "kick-off").await.unwrap().seq;
    let mut last = start;
    for w in waits {
        let (got, at, _connection) = w.await.unwrap();
        assert_eq!(got, seq);
        last = last.max(at);
    }
    println!(
        "fan-out: 1 message to {} online members in {:.1} ms (send to last receipt, {} build)",
        MEMBERS - 1,
        (last - start).as_secs_f64() * 1000.0,
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    t.stop().await;
}

/// A 100,000-member group: membership, paging, the size cap and fan-out all work.
/// Most members are added through the store in one bulk call (they need no accounts
/// or connections for this); three are real users who talk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_one_hundred_thousand_members_works() {
    const SIZE: u64 = 100_000;
    let t = TestServer::start_with(|c| c.max_group_members = SIZE).await;
    let p = users(&t, "h", 4).await;
    let owner = t.http_as(&p[0]);
    let g = owner
        .create_group(&NewGroup {
            name: "city".into(),
            members: vec![p[1].user_id],
            ..NewGroup::default()
        })
        .await
        .unwrap()
        .group_id;
    let api = t.server.api();
    let bulk: Vec<u64> = (1_000_000..1_000_000 + SIZE - 2).collect();
    let added = api
        .import_members(g, bulk, p[0].user_id)
        .await
        .unwrap()
        .added
        .len() as u64;
    assert_eq!(added, SIZE - 2);
    assert_eq!(owner.group(g).await.unwrap().member_count, SIZE);

    // Full: the next one is refused with a code.
    let err = owner.add_members(g, &[p[2].user_id]).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::GroupFull));

    // Member pages are bounded and reach the end.
    let last_page = owner
        .members(g, Some(1_000_000 + SIZE - 600), Some(500))
        .await
        .unwrap();
    assert_eq!(last_page.members.len(), 500);
    let tail = owner
        .members(g, last_page.next_after, Some(500))
        .await
        .unwrap();
    assert!(tail.members.len() < 500 && tail.next_after.is_none());

    // A message still reaches the online member (the router walks 100,000 members).
    let c = ConversationId::Group(g);
    let (sender, _se) = t.connect(&p[0], "phone").await;
    let (_member, mut member_events) = t.connect(&p[1], "phone").await;
    let start = Instant::now();
    let seq = sender.send_text(&c, "hello city").await.unwrap().seq;
    assert_eq!(next_text(&mut member_events).await.seq, seq);
    println!(
        "100,000-member group: send to receipt {:.1} ms ({} build)",
        start.elapsed().as_secs_f64() * 1000.0,
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    t.stop().await;
}

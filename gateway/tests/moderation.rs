//! Group moderation against a real gateway: muting a member for a time and the
//! whole group; who may; the events in the log; and sends refused from the mute's
//! seq on, in order with the messages around it.

mod common;

use common::{next_message, TestServer};
use courier_sdk::pb::{self, message_body::Content, system_event::Event as SysEvent};
use courier_sdk::{ConversationId, ErrorCode, NewGroup};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn muted_members_and_groups_are_refused_from_the_event_on() {
    let t = TestServer::start().await;
    let p = common::users(&t, "mod", 4).await;
    let (owner, admin, member, other) = (&p[0], &p[1], &p[2], &p[3]);
    let owner_http = t.http_as(owner);
    let g = owner_http
        .create_group(&NewGroup {
            name: "moderated".into(),
            members: vec![admin.user_id, member.user_id, other.user_id],
            ..NewGroup::default()
        })
        .await
        .unwrap()
        .group_id;
    owner_http
        .set_role(g, admin.user_id, "admin")
        .await
        .unwrap();
    let c = ConversationId::Group(g);
    let (m, _me) = t.connect(member, "phone").await;
    let (o, mut other_events) = t.connect(other, "phone").await;
    let (a, _ae) = t.connect(admin, "phone").await;

    // Members moderate nobody.
    let member_http = t.http_as(member);
    assert_eq!(
        common::http_code(&member_http.mute_group(g, true).await.unwrap_err()).0,
        403
    );
    assert_eq!(
        common::http_code(
            &member_http
                .mute_member(g, other.user_id, 60_000)
                .await
                .unwrap_err()
        )
        .0,
        403
    );
    // An admin mutes nobody above it.
    assert_eq!(
        common::http_code(
            &t.http_as(admin)
                .mute_member(g, owner.user_id, 60_000)
                .await
                .unwrap_err()
        )
        .0,
        403
    );

    // The member sends a burst while an admin mutes it: every message stored
    // before the mute's event, every one after refused with MUTED.
    let mut sends = Vec::new();
    for i in 0..20 {
        sends.push(
            m.submit_send(
                &c,
                pb::MessageBody::text(format!("burst {i}")),
                format!("b{i}"),
            )
            .await
            .unwrap(),
        );
    }
    let muted = t
        .http_as(admin)
        .mute_member(g, member.user_id, 3_600_000)
        .await
        .unwrap();
    assert!(muted["muted_until_ms"].as_u64().unwrap() > courier_storage_now());
    let mut stored = Vec::new();
    for send in sends {
        match send.await {
            Ok(receipt) => stored.push(receipt.seq),
            Err(e) => assert_eq!(e.code(), Some(ErrorCode::Muted)),
        }
    }
    let history = owner_http.history_all(&c, 0).await.unwrap();
    let mute_seq = history
        .iter()
        .find(|h| h.body["event"] == "member_muted")
        .expect("the mute's event")
        .seq;
    assert!(
        stored.iter().all(|&s| s < mute_seq),
        "{stored:?} vs {mute_seq}"
    );
    let after = m.send_text(&c, "can I?").await.unwrap_err();
    assert_eq!(after.code(), Some(ErrorCode::Muted));
    assert!(history
        .iter()
        .filter(|h| h.seq > mute_seq)
        .all(|h| h.from != member.user_id));
    // The other members see the event; the others still speak.
    loop {
        let msg = next_message(&mut other_events).await;
        if let Some(Content::System(pb::SystemEvent {
            event: Some(SysEvent::MemberMuted(e)),
        })) = msg.body.and_then(|b| b.content)
        {
            assert_eq!((e.user_id, e.by_user), (member.user_id, admin.user_id));
            break;
        }
    }
    o.send_text(&c, "I still can").await.unwrap();
    let members = owner_http.members(g, None, None).await.unwrap();
    let listed = members
        .members
        .iter()
        .find(|v| v.user_id == member.user_id)
        .unwrap();
    assert!(listed.muted_until_ms.is_some());
    // Unmuted, it speaks again.
    t.http_as(admin)
        .mute_member(g, member.user_id, 0)
        .await
        .unwrap();
    m.send_text(&c, "thanks").await.unwrap();

    // The whole group: plain members refused, admins and the owner speak.
    let view = t.http_as(admin).mute_group(g, true).await.unwrap();
    assert_eq!(view["muted"], true);
    assert_eq!(
        o.send_text(&c, "hello?").await.unwrap_err().code(),
        Some(ErrorCode::Muted)
    );
    a.send_text(&c, "announcement").await.unwrap();
    owner_http.mute_group(g, false).await.unwrap();
    o.send_text(&c, "hello!").await.unwrap();

    // Dismissed (by the owner only): read-only for everyone.
    assert_eq!(
        common::http_code(&t.http_as(admin).dismiss_group(g).await.unwrap_err()).0,
        403
    );
    assert!(owner_http.dismiss_group(g).await.unwrap().dismissed);
    assert_eq!(
        o.send_text(&c, "anyone?").await.unwrap_err().code(),
        Some(ErrorCode::Forbidden)
    );
    assert_eq!(
        a.send_text(&c, "anyone?").await.unwrap_err().code(),
        Some(ErrorCode::Forbidden)
    );
    let history = t.http_as(other).history_all(&c, 0).await.unwrap();
    assert_eq!(history.last().unwrap().body["event"], "group_dismissed");
    t.stop().await;
}

/// A 1x1 PNG.
fn png() -> Vec<u8> {
    vec![
        0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44,
        0x52, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x02, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1F,
        0x15, 0xC4, 0x89, 0x00, 0x00, 0x00, 0x0A, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9C, 0x63, 0x00,
        0x01, 0x00, 0x00, 0x05, 0x00, 0x01, 0x0D, 0x0A, 0x2D, 0xB4, 0x00, 0x00, 0x00, 0x00, 0x49,
        0x45, 0x4E, 0x44, 0xAE, 0x42, 0x60, 0x82,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn description_picture_and_versioned_announcements() {
    let t = TestServer::start().await;
    let p = common::users(&t, "ann", 2).await;
    let owner_http = t.http_as(&p[0]);
    let g = owner_http
        .create_group(&NewGroup {
            name: "club".into(),
            members: vec![p[1].user_id],
            ..NewGroup::default()
        })
        .await
        .unwrap()
        .group_id;
    let c = ConversationId::Group(g);
    let (_m, mut member_events) = t.connect(&p[1], "phone").await;
    let picture = owner_http.upload_bytes(png()).await.unwrap();
    let view = owner_http
        .set_group_profile(g, Some("we play chess"), Some(&picture.sha256))
        .await
        .unwrap();
    assert_eq!(view.description, "we play chess");
    assert_eq!(view.avatar.unwrap()["sha256"], picture.sha256.as_str());
    let first = owner_http.set_announcement(g, "meet at 8").await.unwrap();
    assert_eq!(first.announcement.unwrap()["version"], 1);
    let second = owner_http.set_announcement(g, "meet at 9").await.unwrap();
    let announcement = second.announcement.unwrap();
    assert_eq!(
        (
            announcement["version"].as_u64(),
            announcement["text"].as_str()
        ),
        (Some(2), Some("meet at 9"))
    );
    // Members get the events, in order, the announcement's with its version.
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let m = next_message(&mut member_events).await;
        match m.body.and_then(|b| b.content) {
            Some(Content::System(pb::SystemEvent {
                event: Some(SysEvent::GroupProfileChanged(e)),
            })) => seen.push(format!("profile {}", e.description.unwrap_or_default())),
            Some(Content::System(pb::SystemEvent {
                event: Some(SysEvent::AnnouncementChanged(e)),
            })) => seen.push(format!("announcement {} v{}", e.text, e.version)),
            _ => {}
        }
    }
    assert_eq!(
        seen,
        [
            "profile we play chess",
            "announcement meet at 8 v1",
            "announcement meet at 9 v2"
        ]
    );
    // A member changes none of it; a picture must be an uploaded image.
    let member_http = t.http_as(&p[1]);
    assert_eq!(
        common::http_code(&member_http.set_announcement(g, "mine").await.unwrap_err()).0,
        403
    );
    // A picture must be an upload of the caller's.
    let unknown = "00".repeat(32);
    let refused = owner_http
        .set_group_profile(g, None, Some(&unknown))
        .await
        .unwrap_err();
    assert!(common::http_code(&refused).0 >= 400, "{refused:?}");
    assert!(owner_http.history_all(&c, 0).await.unwrap().len() >= 4);
    t.stop().await;
}

fn courier_storage_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A member's event of `kind`, skipping other frames; panics after the wait.
async fn next_system(events: &mut courier_sdk::Events) -> SysEvent {
    loop {
        let m = next_message(events).await;
        if let Some(Content::System(s)) = m.body.and_then(|b| b.content) {
            if let Some(e) = s.event {
                return e;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn banned_users_are_removed_and_stay_out() {
    let t = TestServer::start().await;
    let p = common::users(&t, "ban", 5).await;
    let (owner, admin, member, outsider, other) = (&p[0], &p[1], &p[2], &p[3], &p[4]);
    let owner_http = t.http_as(owner);
    let g = owner_http
        .create_group(&NewGroup {
            name: "banning".into(),
            join_policy: Some("open".into()),
            members: vec![admin.user_id, member.user_id, other.user_id],
            ..NewGroup::default()
        })
        .await
        .unwrap()
        .group_id;
    owner_http
        .set_role(g, admin.user_id, "admin")
        .await
        .unwrap();
    let c = ConversationId::Group(g);
    let (m, mut member_events) = t.connect(member, "phone").await;
    let (_o, mut other_events) = t.connect(other, "phone").await;

    // Who may ban whom.
    let code = |e: courier_sdk::SdkError| common::http_code(&e);
    assert_eq!(
        code(
            t.http_as(other)
                .ban(g, member.user_id, true)
                .await
                .unwrap_err()
        )
        .0,
        403,
        "a member bans nobody"
    );
    assert_eq!(
        code(
            t.http_as(admin)
                .ban(g, owner.user_id, true)
                .await
                .unwrap_err()
        )
        .0,
        403,
        "nobody bans the owner"
    );
    assert_eq!(
        code(t.http_as(other).bans(g, 0, 10).await.unwrap_err()).0,
        403,
        "members do not see the bans"
    );

    // An admin bans the member: removed, told by the event (its last message).
    t.http_as(admin).ban(g, member.user_id, true).await.unwrap();
    for events in [&mut member_events, &mut other_events] {
        match next_system(events).await {
            SysEvent::MemberBanned(e) => {
                assert_eq!(
                    (e.user_id, e.banned, e.by_user),
                    (member.user_id, true, admin.user_id)
                )
            }
            other => panic!("expected MemberBanned, got {other:?}"),
        }
    }
    let refused = m
        .send(&c, pb::MessageBody::text("let me speak"), "speak".into())
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused.code(),
            Some(ErrorCode::Forbidden | ErrorCode::UnknownConversation)
        ),
        "{refused:?}"
    );
    // No way back: joining the open group, being added, an invitation.
    let member_http = t.http_as(member);
    assert_eq!(
        code(member_http.join_group(g).await.unwrap_err()),
        (403, Some(ErrorCode::BannedFromGroup))
    );
    let added = owner_http
        .add_members(g, &[member.user_id, outsider.user_id])
        .await
        .unwrap();
    assert_eq!(
        (added.added, added.banned),
        (vec![outsider.user_id], vec![member.user_id])
    );
    // An outsider banned ahead of time, then the list.
    owner_http.ban(g, 999_999_999, true).await.unwrap_err();
    t.http_as(admin)
        .ban(g, outsider.user_id, true)
        .await
        .unwrap();
    let bans = owner_http.bans(g, 0, 10).await.unwrap();
    let banned: Vec<u64> = bans["bans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["user_id"].as_u64().unwrap())
        .collect();
    let mut expected = vec![member.user_id, outsider.user_id];
    expected.sort_unstable();
    assert_eq!(banned, expected);
    assert_eq!(bans["bans"][0]["by_user"], admin.user_id);

    // Lifted: the member joins again.
    owner_http.ban(g, member.user_id, false).await.unwrap();
    member_http.join_group(g).await.unwrap();
    let events: Vec<String> = owner_http
        .history_all(&c, 0)
        .await
        .unwrap()
        .iter()
        .filter_map(|m| {
            let b = &m.body;
            Some(match b["event"].as_str()? {
                "member_banned" => format!("banned {} {}", b["user_id"], b["banned"]),
                "member_joined" => format!("joined {}", b["user_id"]),
                "members_added" => format!("added {}", b["user_ids"]),
                _ => return None,
            })
        })
        .collect();
    let (mu, ou) = (member.user_id, outsider.user_id);
    assert_eq!(
        events[events.len() - 5..],
        [
            format!("banned {mu} true"),
            format!("added [{ou}]"),
            format!("banned {ou} true"),
            format!("banned {mu} false"),
            format!("joined {mu}"),
        ],
        "{events:?}"
    );
    // The outsider was a member when banned: removed with its ban.
    assert!(owner_http
        .members(g, None, Some(100))
        .await
        .unwrap()
        .members
        .iter()
        .all(|m| m.user_id != ou));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_requests_wait_for_approval() {
    let t = TestServer::start().await;
    let p = common::users(&t, "ask", 5).await;
    let (owner, admin, member, asker, second) = (&p[0], &p[1], &p[2], &p[3], &p[4]);
    let owner_http = t.http_as(owner);
    let g = owner_http
        .create_group(&NewGroup {
            name: "by approval".into(),
            join_policy: Some("approval".into()),
            members: vec![admin.user_id, member.user_id],
            ..NewGroup::default()
        })
        .await
        .unwrap()
        .group_id;
    owner_http
        .set_role(g, admin.user_id, "admin")
        .await
        .unwrap();
    let (_a, mut admin_events) = t.connect(admin, "phone").await;
    let (_m, mut member_events) = t.connect(member, "phone").await;

    // Outsiders see the group, and ask.
    let asker_http = t.http_as(asker);
    assert_eq!(asker_http.group(g).await.unwrap().join_policy, "approval");
    let request = asker_http.request_to_join(g, "I'd like in").await.unwrap();
    assert_eq!(
        (request["user_id"].as_u64(), request["message"].as_str()),
        (Some(asker.user_id), Some("I'd like in"))
    );
    // The admin is told at once; plain members are not.
    let told = tokio::time::timeout(common::WAIT, async {
        loop {
            if let Some(courier_sdk::Event::JoinRequested(j)) = admin_events.next().await {
                return j;
            }
        }
    })
    .await
    .expect("the admin is told of the request");
    assert_eq!(
        (told.group_id, told.user_id, told.message.as_str()),
        (g, asker.user_id, "I'd like in")
    );
    // Not a member yet: no history.
    assert!(asker_http
        .history_all(&ConversationId::Group(g), 0)
        .await
        .is_err());
    t.http_as(second)
        .request_to_join(g, "me too")
        .await
        .unwrap();
    assert_eq!(
        common::http_code(&t.http_as(member).join_requests(g, 0, 10).await.unwrap_err()).0,
        403,
        "members do not see requests"
    );
    let pending = t.http_as(admin).join_requests(g, 0, 10).await.unwrap();
    let who: Vec<u64> = pending["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["user_id"].as_u64().unwrap())
        .collect();
    let mut expected = vec![asker.user_id, second.user_id];
    expected.sort_unstable();
    assert_eq!(who, expected);

    // Approved: a member, announced to the group with the approver.
    let joined = t
        .http_as(admin)
        .approve_join(g, asker.user_id)
        .await
        .unwrap();
    assert_eq!(joined["user_id"].as_u64(), Some(asker.user_id));
    match next_system(&mut member_events).await {
        SysEvent::MemberJoined(e) => {
            assert_eq!((e.user_id, e.by_user), (asker.user_id, admin.user_id))
        }
        other => panic!("expected MemberJoined, got {other:?}"),
    }
    assert!(asker_http.group(g).await.unwrap().my_role.is_some());
    // Declined, or taken back: gone; a second answer finds nothing.
    owner_http.decline_join(g, second.user_id).await.unwrap();
    assert_eq!(
        common::http_code(
            &owner_http
                .approve_join(g, second.user_id)
                .await
                .unwrap_err()
        )
        .0,
        404
    );
    let second_http = t.http_as(second);
    second_http.request_to_join(g, "again").await.unwrap();
    second_http.cancel_join_request(g).await.unwrap();
    assert!(
        owner_http.join_requests(g, 0, 10).await.unwrap()["requests"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // A ban drops a pending request and refuses new ones.
    second_http.request_to_join(g, "third time").await.unwrap();
    owner_http.ban(g, second.user_id, true).await.unwrap();
    assert!(
        owner_http.join_requests(g, 0, 10).await.unwrap()["requests"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        common::http_code(&second_http.request_to_join(g, "please").await.unwrap_err()),
        (403, Some(ErrorCode::BannedFromGroup))
    );
    // Members asking again are told they are in.
    assert_eq!(
        common::http_code(&asker_http.request_to_join(g, "").await.unwrap_err()).0,
        409
    );
}

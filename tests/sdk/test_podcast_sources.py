"""Podcast feeds as sources: RSS and Atom, files and URLs, episode ids from the guid."""

from __future__ import annotations

from pathlib import Path

import pytest
from stenopod.backlog.sources import SourceError, expand_sources, parse_itunes_duration

from tests.sdk.sources_support import ids_valid
from tests.support.servers import AudioHTTPServer

pytestmark = pytest.mark.timeout(120)


RSS = """<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:itunes="http://www.itunes.com/dtds/podcast-1.0.dtd">
  <channel>
    <title>Test cast</title>
    <item>
      <title>Episode 1</title>
      <guid isPermaLink="false">show-ep-0001</guid>
      <enclosure url="{audio}/jfk.flac" type="audio/flac" length="{jfk_size}"/>
      <itunes:duration>00:00:11</itunes:duration>
    </item>
    <item>
      <title>Episode 2</title>
      <link>https://example.com/ep2</link>
      <enclosure url="{audio}/hotwords.mp3" type="audio/mpeg" length="0"/>
      <itunes:duration>1:05</itunes:duration>
    </item>
    <item><title>A text post</title><guid>post-3</guid></item>
    <item>
      <title>Slides</title><guid>slides-4</guid>
      <enclosure url="{audio}/slides.pdf" type="application/pdf" length="10"/>
    </item>
    <item>
      <title>Video</title><guid>show-ep-0005</guid>
      <enclosure url="{audio}/multilingual.mp3" type="video/mp4" length="99"/>
      <itunes:duration>125</itunes:duration>
    </item>
    <item>
      <title>Episode 1 again</title>
      <guid isPermaLink="false">show-ep-0001</guid>
      <enclosure url="{audio}/jfk.flac" type="audio/flac"/>
    </item>
  </channel>
</rss>
"""

ATOM = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xmlns:itunes="http://www.itunes.com/dtds/podcast-1.0.dtd">
  <title>Atom cast</title>
  <entry>
    <title>Lecture 1</title>
    <id>tag:example.com,2024:lecture-1</id>
    <link rel="alternate" href="https://example.com/l1"/>
    <link rel="enclosure" href="{audio}/librispeech_1089-134686-0001.wav" type="audio/wav" length="1234"/>
    <itunes:duration>01:02:03</itunes:duration>
  </entry>
  <entry>
    <title>Lecture 2</title>
    <link href="https://example.com/l2"/>
    <link rel="enclosure" href="relative/l2.mp3"/>
  </entry>
  <entry><title>News</title><id>news-1</id><link href="https://example.com/news"/></entry>
</feed>
"""


def test_rss_feed_url_without_extension(
    served_dir: tuple[Path, AudioHTTPServer], audio_server: AudioHTTPServer, data_dir: Path
) -> None:
    root, server = served_dir
    (root / "feed").write_text(
        RSS.format(audio=audio_server.base_url, jfk_size=(data_dir / "jfk.flac").stat().st_size)
    )
    items = expand_sources([server.url("feed")])
    assert [item.title for item in items] == ["Episode 1", "Episode 2", "Video"]
    first, second, video = items
    assert first.audio == audio_server.url("jfk.flac") and first.source == first.audio
    assert [item.id for item in items] == ["Episode-1", "Episode-2", "Video"]  # named by their titles
    assert (first.duration_s, first.size_bytes) == (11.0, (data_dir / "jfk.flac").stat().st_size)
    assert (second.duration_s, second.size_bytes) == (65.0, None)
    assert (video.duration_s, video.size_bytes) == (125.0, 99)
    assert ids_valid(items)
    # Same feed again: same ids; the audio itself was never downloaded.
    assert [item.id for item in expand_sources([server.url("feed")])] == [item.id for item in items]
    assert audio_server.requests == []


def test_atom_feed_file_and_url(
    served_dir: tuple[Path, AudioHTTPServer], audio_server: AudioHTTPServer
) -> None:
    root, server = served_dir
    (root / "lectures.atom").write_text(ATOM.format(audio=audio_server.base_url))
    first, second = expand_sources([server.url("lectures.atom")])
    assert first.title == "Lecture 1" and first.duration_s == 3723.0 and first.size_bytes == 1234
    assert first.id == "Lecture-1"
    assert second.audio == server.url("relative/l2.mp3")
    assert second.id == "Lecture-2"
    # The same feed as a local file (sniffed by content even with a .xml name).
    local = root / "copy.xml"
    local.write_text(
        ATOM.format(audio=audio_server.base_url).replace("relative/l2.mp3", "https://x.test/l2.mp3")
    )
    assert [item.title for item in expand_sources([str(local)])] == ["Lecture 1", "Lecture 2"]


def test_a_feed_by_another_url_keeps_its_episode_ids(
    served_dir: tuple[Path, AudioHTTPServer], audio_server: AudioHTTPServer, data_dir: Path
) -> None:
    root, server = served_dir
    (root / "feed").write_text(
        RSS.format(audio=audio_server.base_url, jfk_size=(data_dir / "jfk.flac").stat().st_size)
    )
    ids = [item.id for item in expand_sources([server.url("feed")])]
    # The same feed by host name, and saved as a file: the same episodes, so the same ids.
    by_name = server.url("feed").replace("127.0.0.1", "localhost")
    assert by_name != server.url("feed")
    assert [item.id for item in expand_sources([by_name])] == ids
    assert [item.id for item in expand_sources([str(root / "feed")])] == ids
    # Given twice in one backlog, by both URLs, each episode is one item.
    assert [item.id for item in expand_sources([server.url("feed"), by_name])] == ids


def test_two_episodes_under_one_guid_are_both_kept(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    feed = tmp_path / "feed.rss"
    feed.write_text(
        "<rss><channel><title>Slips</title>"
        '<item><title>One</title><guid>ep</guid><enclosure url="https://x.test/1.mp3" type="audio/mpeg"/></item>'
        '<item><title>Two</title><guid>ep</guid><enclosure url="https://x.test/2.mp3" type="audio/mpeg"/></item>'
        '<item><title>Two again</title><guid>ep</guid><enclosure url="https://x.test/2.mp3"/></item>'
        "</channel></rss>"
    )
    with caplog.at_level("WARNING"):
        items = expand_sources([str(feed)])
    assert [item.title for item in items] == ["One", "Two"]
    assert ids_valid(items) and [item.id for item in items] == ["One", "Two"]
    assert "guid 'ep' is also entry 1's" in caplog.text
    # Stable: the first keeps the guid's id, the second its own, run after run.
    assert [item.id for item in expand_sources([str(feed)])] == [item.id for item in items]


def test_feed_with_entity_declarations_is_refused(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.xml"
    bomb.write_text(
        '<?xml version="1.0"?>\n<!DOCTYPE rss [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>\n'
        "<rss><channel><item><title>&b;</title></item></channel></rss>"
    )
    with pytest.raises(SourceError, match="bomb.xml: feeds with a DOCTYPE or ENTITY declaration are refused"):
        expand_sources([str(bomb)])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("<rss><channel><item><title>x</title></item></channel></rss>", "no entries with an audio enclosure"),
        ("<rss><channel><item>", "not well-formed XML"),
        ("<html><body/></html>", "not an RSS 2.0 or Atom feed"),
    ],
)
def test_bad_feeds(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "feed.rss").write_text(content)
    with pytest.raises(SourceError, match=message):
        expand_sources([str(tmp_path / "feed.rss")])


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("01:02:03", 3723.0),
        ("5:07", 307.0),
        ("42", 42.0),
        ("12.5", 12.5),
        ("", None),
        ("a:b", None),
        ("1:2:3:4", None),
    ],
)
def test_itunes_duration(value: str, seconds: float | None) -> None:
    assert parse_itunes_duration(value) == seconds


# --- bad sources ----------------------------------------------------------------------------------

from unittest import mock

import main


@mock.patch.object(main, "publisher")
@mock.patch.object(main, "translate_client")
@mock.patch.object(main, "vision_client")
def test_detect_text(vision_client, translate_client, publisher, monkeypatch):
    monkeypatch.setenv("TRANSLATE_TOPIC", "t")
    vision_client.text_detection.return_value.text_annotations = []
    main.detect_text("bucket", "file.png")
    assert publisher.publish.called

"""The app in a real browser (Debian's headless Chromium through Selenium): what the page SENDS when Predict is
clicked must be exactly what it shows, whatever examples were clicked before.

Chromium and its driver come from apt (``.ci/run`` installs them); their absence is an error, not a skip.
"""

import pytest

import app
from tests.browser import GradioPage, chromium
from tests.camtl_fixtures import tiny_checkpoint, tiny_reference


@pytest.fixture(scope="module")
def page():
    """The demo over the tiny checkpoint (monitored for SST-2 and RTE), every call of its predict function recorded,
    open in Chromium."""
    predictor = app.Predictor(str(tiny_checkpoint()))
    sent, predict = [], predictor.predict

    def recording(task, text, text_pair=""):
        sent.append((task, text, text_pair))
        return predict(task, text, text_pair)

    predictor.predict = recording  # what the Predict button calls, with what the page sends
    demo = app.build_demo(predictor, reference=tiny_reference())
    demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    try:
        with chromium() as driver:
            view = GradioPage(driver, demo.local_url)
            view.sent, view.demo = sent, demo
            yield view
    finally:
        demo.close()


def predict(page) -> tuple:
    """Click Predict; return what the server received and what the page showed at that moment."""
    shown = page.settle()
    before = len(page.sent)
    page.click("Predict")
    page.wait(lambda: len(page.sent) > before, "Predict sent nothing")
    return page.sent[-1], shown


def shown_examples(task: str) -> list[dict]:
    """The examples of ``task`` the page lists, in order: those of app_examples.json not marked ``"shown": false``."""
    return [e for e in app.read_examples()["tasks"][task] if e.get("shown", True)]


def click_example(page, task: str, index: int) -> None:
    names = (task, app.TASK_INFO[task]["title"], app.task_choice({"name": task}))

    def rows():
        return [r for r in page.example_rows() if r.text.split("\n")[0].strip() in names]

    page.wait(lambda: len(rows()) > index, f"no example {index} of {task}")
    rows()[index].click()
    text = shown_examples(task)[index]["text"]
    page.wait(lambda: any(value == text for _, value in page.textboxes()), f"example {task} {index} not loaded")
    page.settle()


def assert_sent_what_is_shown(sent: tuple, shown: list) -> None:
    task, text, text_pair = sent
    assert [value for _, value in shown] == [t for t in (text, text_pair) if t], (sent, shown)


@pytest.mark.parametrize("task", ["rte", "stsb"])
def test_second_example_of_a_pair_task_shows_and_sends_both_sentences(page, task):
    """The reported bug: after a first example of a pair task, a second one of the same task hid Sentence 2 while
    Predict still sent its text."""
    examples = shown_examples(task)
    for index in (0, 1):
        click_example(page, task, index)
        labels = [label for label, _ in page.textboxes()]
        assert labels == ["Sentence 1", "Sentence 2"], labels
        sent, shown = predict(page)
        assert sent == (task, examples[index]["text"], examples[index]["text_pair"])
        assert_sent_what_is_shown(sent, shown)


def test_a_single_text_example_after_a_pair_one_sends_no_hidden_text(page):
    click_example(page, "mnli", 0)
    assert [label for label, _ in page.textboxes()] == ["Premise", "Hypothesis"]
    click_example(page, "sst2", 1)
    assert [label for label, _ in page.textboxes()] == ["Sentence"]  # the hypothesis box is gone ...
    sent, shown = predict(page)
    assert sent == ("sst2", shown_examples("sst2")[1]["text"], "")  # ... and sends nothing
    assert_sent_what_is_shown(sent, shown)


def test_typed_text_and_the_all_tasks_tab(page):
    click_example(page, "rte", 0)
    page.type_into("Sentence 2", "A different second sentence.")
    page.wait(lambda: ("Sentence 2", "A different second sentence.") in page.textboxes(), "typing did not land")
    sent, shown = predict(page)
    assert sent[2] == "A different second sentence." and sent[0] == "rte"
    assert_sent_what_is_shown(sent, shown)
    page.click("All tasks at once")
    page.wait(
        lambda: (
            [label for label, _ in page.textboxes()]
            == ["Text", "Second text (optional: fill it to run the pair tasks)"]
        ),
        "the all-tasks tab did not open",
    )
    page.type_into("Text", "A warm, funny film.")
    page.click("Run all compatible tasks")
    page.wait(
        lambda: "SST-2" in page.driver.page_source and "positive" in page.driver.page_source.split("Answers")[-1],
        "no answers shown",
    )
    page.click("One task")


def test_an_emoji_answer_is_flagged_beside_it_and_the_monitoring_tab_counts_the_traffic(page):
    click_example(page, "sst2", 0)
    page.set_value("Sentence", "😀😀😀")
    page.wait(lambda: ("Sentence", "😀😀😀") in page.textboxes(), "the emoji did not land")
    sent, shown = predict(page)
    assert sent == ("sst2", "😀😀😀", "")
    page.wait(lambda: "Unusual input" in page.inner_text("ood-flag"), "no flag beside the answer")
    assert "unknown to the model" in page.inner_text("ood-flag")
    page.click("Monitoring")
    page.wait(lambda: "sst2:" in page.inner_text("monitoring-details"), "the monitoring tab shows no status")
    served = page.demo.monitoring.monitor.requests["sst2"]  # every SST-2 row the model ran (the all-tasks tab's too)
    assert served >= sum(1 for task, _, _ in page.sent if task == "sst2") >= 2
    page.wait(lambda: f"{served} of {served}" in page.driver.page_source, "the tab does not count the requests")
    page.click("One task")

from conftest import people


def test_smoke(ws):
    ws.add_tenant("acme")
    ws.upload(people(3), count=3)
    runs = ws.sync()
    print(runs)
    print(ws.subscribers())
    print(list(ws.home().iterdir()))
    print((ws.home()/"subscriber_list.result.txt").read_text())
    print(ws.cli("runs","acme","--json").output)

using System.Net;
using System.Net.Sockets;
using Microsoft.Data.Sqlite;

namespace Bursar.Gateway.Tests;

/// <summary>The built <c>bursar</c> command as an operator meets it: exit codes, one-line errors, graceful stops.</summary>
[Collection("processes")]
public sealed class CliTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "bursar-cli-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        SqliteConnection.ClearAllPools();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
        try { File.Delete(_dir + ".file"); } catch (IOException) { }
    }

    private static void OneLineError((int Exit, string Out, string Err) r, string mustSay)
    {
        Assert.Equal(2, r.Exit);
        Assert.Contains(mustSay, r.Err, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", r.Err + r.Out, StringComparison.Ordinal); // no stack trace
        Assert.DoesNotContain("Unhandled exception", r.Err + r.Out, StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_demo_gives_the_same_figures_every_run()
    {
        string Totals(string output) => string.Join("\n", output.Split('\n').Where(l => l.Contains("TOTAL", StringComparison.Ordinal) || l.StartsWith("Prompt-cache reads", StringComparison.Ordinal) || l.StartsWith("Refused before any spend", StringComparison.Ordinal)));
        var runs = new List<string>();
        for (var i = 0; i < 2; i++)
        {
            var r = await BursarProcess.RunAsync(_dir + "-demo" + i, "demo", "--calls", "120");
            try { Directory.Delete(_dir + "-demo" + i, true); } catch (IOException) { }
            Assert.True(r.Exit == 0, r.Err);
            runs.Add(Totals(r.Out));
        }
        Assert.Contains("TOTAL", runs[0]);
        Assert.Equal(runs[0], runs[1]);
    }

    [Fact]
    public async Task A_read_only_command_refuses_a_data_directory_that_does_not_exist()
    {
        var r = await BursarProcess.RunAsync(_dir, "report");
        OneLineError(r, "No Bursar data in");
        Assert.False(Directory.Exists(_dir), "a mistyped --data-dir must not be created by a read-only command");
        OneLineError(await BursarProcess.RunAsync(_dir, "limits", "list"), "No Bursar data in");
    }

    [Fact]
    public async Task A_file_where_the_data_directory_should_be_is_one_line()
    {
        File.WriteAllText(_dir + ".file", "not a folder");
        OneLineError(await BursarProcess.RunAsync(_dir + ".file", "keys", "list"), "is a file, not a folder");
    }

    [Fact]
    public async Task A_bad_configuration_value_is_one_line_naming_it()
    {
        OneLineError(await BursarProcess.RunAsync(_dir, "serve", "--port", BursarProcess.FreePort().ToString(System.Globalization.CultureInfo.InvariantCulture), "--Bursar:ClaudeTokenFactor=-2"),
            "Bursar:ClaudeTokenFactor must be in (0, 10], not -2.");
    }

    [Fact]
    public async Task An_unknown_option_of_serve_is_an_error_not_ignored()
    {
        var r = await BursarProcess.RunAsync(_dir, "serve", "--prot", "9000");
        OneLineError(r, "Unknown option or argument '--prot'");
    }

    [Fact]
    public async Task A_busy_port_is_one_line_with_the_fix()
    {
        using var busy = new TcpListener(IPAddress.Loopback, 0);
        busy.Start();
        var port = ((IPEndPoint)busy.LocalEndpoint).Port;
        var r = await BursarProcess.RunAsync(_dir, "serve", "--port", port.ToString(System.Globalization.CultureInfo.InvariantCulture));
        OneLineError(r, "address already in use");
        Assert.Contains("--port", r.Err, StringComparison.Ordinal);
        Assert.DoesNotContain("Bursar gateway on", r.Out, StringComparison.Ordinal); // no banner before the failure
    }

    [Fact]
    public async Task A_bad_report_dimension_lists_the_valid_ones_and_any_case_is_accepted()
    {
        await BursarProcess.CreateKeyAsync(_dir);
        var bad = await BursarProcess.RunAsync(_dir, "report", "--by", "colour");
        Assert.NotEqual(0, bad.Exit);
        Assert.Contains("use one of: feature, team, customer", bad.Err + bad.Out, StringComparison.Ordinal);
        Assert.DoesNotContain("Bursar.Core", bad.Err + bad.Out, StringComparison.Ordinal); // no internal type name
        Assert.Equal(0, (await BursarProcess.RunAsync(_dir, "report", "--by", "Team")).Exit); // any case
    }

    [Fact]
    public async Task Limits_list_says_when_there_are_none_and_delete_removes_one()
    {
        await BursarProcess.CreateKeyAsync(_dir);
        var empty = await BursarProcess.RunAsync(_dir, "limits", "list");
        Assert.Equal(0, empty.Exit);
        Assert.Contains("No rate limits", empty.Out, StringComparison.Ordinal);
        Assert.Equal(0, (await BursarProcess.RunAsync(_dir, "limits", "set", "--scope", "team", "--value", "search", "--rpm", "60")).Exit);
        var zero = await BursarProcess.RunAsync(_dir, "limits", "set", "--scope", "team", "--value", "search", "--rpm", "0");
        Assert.Equal(2, zero.Exit);
        Assert.Contains("limits delete", zero.Err, StringComparison.Ordinal);
        Assert.Equal(0, (await BursarProcess.RunAsync(_dir, "limits", "delete", "--scope", "team", "--value", "search")).Exit);
        Assert.Contains("No rate limits", (await BursarProcess.RunAsync(_dir, "limits", "list")).Out, StringComparison.Ordinal);
        Assert.Equal(2, (await BursarProcess.RunAsync(_dir, "limits", "delete", "--scope", "team", "--value", "search")).Exit);
    }

    [Fact]
    public async Task Serve_with_only_the_base_url_of_anthropic_overridden_keeps_its_dialect_and_models_and_prints_each_deployment()
    {
        await using var gw = await BursarProcess.StartAsync(_dir, BursarProcess.FreePort(), "serve", "--port", "{port}", "--Bursar:Providers:Deployments:anthropic:BaseUrl=http://127.0.0.1:9/up");
        string Line(string name)
        {
            for (var i = 0; i < 100 && !gw.Log.Contains("routes:", StringComparison.Ordinal); i++) Thread.Sleep(50);
            return gw.Log.Split('\n').Select(l => l.Trim()).FirstOrDefault(l => l.StartsWith(name + " ", StringComparison.Ordinal)) ?? throw new Xunit.Sdk.XunitException($"no {name} line in:\n{gw.Log}");
        }
        var anthropic = Line("anthropic");
        Assert.Contains(" anthropic ", anthropic, StringComparison.Ordinal); // the dialect
        Assert.Contains("http://127.0.0.1:9/up", anthropic, StringComparison.Ordinal);
        Assert.Contains("models: claude-*", anthropic, StringComparison.Ordinal);
        var openai = Line("openai");
        Assert.Contains(" openai ", openai, StringComparison.Ordinal);
        Assert.Contains("https://api.openai.com/v1", openai, StringComparison.Ordinal);
        Assert.Contains("gpt-*", openai, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Metrics_right_after_demo_serve_show_the_demos_calls()
    {
        await using var gw = await BursarProcess.StartAsync(_dir, BursarProcess.FreePort(), "demo", "--calls", "30", "--serve", "--port", "{port}");
        await gw.WaitForOutputAsync("Dashboard:", TimeSpan.FromSeconds(60));
        Assert.Contains("refused by budget", gw.Log, StringComparison.Ordinal); // budget refusals are not counted as failures
        using var http = new HttpClient();
        var text = "";
        // the Prometheus exporter caches a scrape for a moment
        for (var i = 0; i < 50 && !text.Contains("bursar_calls", StringComparison.Ordinal); i++)
        {
            text = await http.GetStringAsync(gw.BaseUrl + "/metrics");
            await Task.Delay(100);
        }
        Assert.Contains("bursar_calls", text, StringComparison.Ordinal);
        Assert.Contains("bursar_cost_USD_total", text, StringComparison.Ordinal);
        Assert.Contains("claude-sonnet-4-5", text, StringComparison.Ordinal); // the demo's support-chat model
        var calls = text.Split('\n').Where(l => l.StartsWith("bursar_calls_total{", StringComparison.Ordinal))
            .Sum(l => double.Parse(l[(l.LastIndexOf(' ') + 1)..], System.Globalization.CultureInfo.InvariantCulture));
        Assert.True(calls >= 30, $"bursar_calls_total sums to {calls}, not the demo's 30 calls:\n{text}");
    }

    [Fact]
    public async Task Tables_print_user_text_as_text_spectre_markup_and_control_characters_escaped()
    {
        // user text with Spectre markup ([red], a closing [/] with nothing open) and terminal escapes (ESC [2J clears the screen)
        const string evil = "evil[red]\u001b[2J[/]x";
        const string shown = "evil[red]\\x1B[2J[/]x";
        await BursarProcess.CreateKeyAsync(_dir);
        var log = Path.Combine(_dir, "calls.csv");
        File.WriteAllText(log, $"timestamp,model,feature,team,input_tokens,output_tokens\n2026-11-01T10:00:00Z,gpt-4o-mini,\"{evil}\",\"{evil}\",1000,100\n");
        foreach (var setup in new[]
        {
            new[] { "import", log }, ["keys", "create", "--team", evil, "--name", evil], ["budgets", "set", "--id", "b1", "--scope", "team", "--value", evil, "--limit", "5"],
            ["limits", "set", "--scope", "team", "--value", evil, "--rpm", "10"],
            ["routes", "set", "r1", "--policy", $$"""{"feature":"{{evil.Replace("\u001b", "\\u001b", StringComparison.Ordinal)}}","model":"gpt-4o-mini"}"""],
        })
        {
            var r = await BursarProcess.RunAsync(_dir, setup);
            Assert.True(r.Exit == 0, $"{setup[0]} {setup[1]} exited {r.Exit}: {r.Err}");
            Assert.DoesNotContain('\u001b', r.Out + r.Err); // the confirmations echo the value escaped
        }
        foreach (var command in new[] { new[] { "report" }, ["report", "--by", "team"], ["keys", "list"], ["budgets", "list"], ["limits", "list"], ["routes", "list"] })
        {
            var r = await BursarProcess.RunAsync(_dir, command);
            var what = string.Join(' ', command);
            Assert.True(r.Exit == 0, $"{what} exited {r.Exit}: {r.Err}");
            Assert.DoesNotContain('\u001b', r.Out);
            Assert.Contains(what == "routes list" ? "evil[red]\\u001B[2J[/]x" : shown, r.Out, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task Prices_list_states_its_units_and_aligns_the_prices()
    {
        await BursarProcess.CreateKeyAsync(_dir);
        var r = await BursarProcess.RunAsync(_dir, "prices", "list", "--filter", "claude");
        Assert.Equal(0, r.Exit);
        Assert.Contains("per 1M tokens", r.Out, StringComparison.Ordinal);
        var lines = r.Out.Split('\n').Select(l => l.TrimEnd('\r')).ToArray();
        var header = lines.Single(l => l.Contains("input $/1M", StringComparison.Ordinal));
        foreach (var unit in new[] { "output $/1M", "cache read $/1M", "cache write 5m $/1M", "cache write 1h $/1M" }) Assert.Contains(unit, header, StringComparison.Ordinal);
        var rows = lines.Where(l => l.StartsWith("| claude", StringComparison.Ordinal)).ToArray();
        Assert.True(rows.Length >= 3, r.Out);
        Assert.All(rows, row => Assert.Equal(header.Length, row.Length)); // one table: every line as wide as the header
        Assert.Contains(rows, row => row.Contains("| claude-sonnet-4-5 ", StringComparison.Ordinal) && row.Contains(" 3.00 ", StringComparison.Ordinal) && row.Contains(" 15.00 ", StringComparison.Ordinal));
        // the decimal points of each price column line up (prices of different magnitudes: 0.80, 3.00, 15.00, 0.075 ...)
        var cells = rows.Select(row => row.Split('|')).ToArray();
        for (var column = 3; column <= 7; column++)
        {
            var c = column;
            var points = cells.Where(cs => cs[c].Contains('.', StringComparison.Ordinal)).Select(cs => string.Join('|', cs.Take(c)).Length + 1 + cs[c].IndexOf('.', StringComparison.Ordinal)).Distinct().ToArray();
            Assert.True(points.Length == 1, $"column {c}: decimal points at {string.Join(", ", points)}:\n{r.Out}");
        }
    }

    [Theory]
    [InlineData("serve")]
    [InlineData("demo")]
    public async Task Sigterm_stops_the_gateway_gracefully_and_drains_the_ledger(string command)
    {
        var key = await BursarProcess.CreateKeyAsync(_dir);
        var port = BursarProcess.FreePort();
        await using var gw = command == "serve"
            ? await BursarProcess.StartAsync(_dir, port, "serve", "--port", "{port}")
            : await BursarProcess.StartAsync(_dir, port, "demo", "--calls", "20", "--serve", "--port", "{port}");
        if (command == "demo") await gw.WaitForOutputAsync("Dashboard:", TimeSpan.FromSeconds(60)); // the demo's workload runs on the same gateway first
        using (var http = new HttpClient())
        using (var req = new HttpRequestMessage(HttpMethod.Post, $"{gw.BaseUrl}/v1/chat/completions"))
        {
            req.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", key);
            req.Content = new StringContent("""{"model":"gpt-4o-mini","messages":[{"role":"user","content":"before the stop"}]}""", System.Text.Encoding.UTF8, "application/json");
            using var resp = await http.SendAsync(req);
            Assert.Equal(HttpStatusCode.OK, resp.StatusCode);
        }
        Assert.True(await gw.TerminateAsync(TimeSpan.FromSeconds(20)), $"{command} still running 20 s after SIGTERM:\n{gw.Log}");
        Assert.Equal(0, gw.ExitCode);
        // drained: the journal is empty and the row is in the store
        Assert.Empty(Directory.GetFiles(Path.Combine(_dir, "spool"), "*.jsonl"));
        using var c = new SqliteConnection($"Data Source={Path.Combine(_dir, "bursar.db")};Pooling=False");
        c.Open();
        using var cmd = c.CreateCommand();
        cmd.CommandText = "SELECT count(*) FROM ledger WHERE key_id IS NOT NULL AND team = 'crash'";
        Assert.True((long)cmd.ExecuteScalar()! >= 1);
    }
}

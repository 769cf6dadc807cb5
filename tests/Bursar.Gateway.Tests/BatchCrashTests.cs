using System.Net;
using System.Net.Http.Headers;
using System.Text;
using Bursar.Core.Batch;
using Bursar.Core.Ledger;
using Bursar.Storage.Sqlite;
using Microsoft.Data.Sqlite;

namespace Bursar.Gateway.Tests;

/// <summary>
/// Nothing lost: a real <c>bursar serve</c> killed with SIGKILL at the batch lever's three dangerous moments (a job accepted
/// and not flushed; the provider holding a batch whose id Bursar never recorded; results arriving while rows are being
/// written), restarted on the same data directory: every accepted job ends in exactly one outcome and one ledger row.
/// </summary>
[Collection("processes")]
public sealed class BatchCrashTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "bursar-batchcrash-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        SqliteConnection.ClearAllPools();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }

    private string[] Serve(params string[] extra) =>
        ["serve", "--urls", "http://127.0.0.1:{port}", "--Bursar:Deferral:FlushInterval=00:00:00.050", "--Bursar:Batch:PollInterval=00:00:00.100",
         "--Bursar:Batch:ReconcileAfter=00:00:00", $"--Bursar:Simulator:BatchDirectory={Path.Combine(_dir, "simulator")}", .. extra];

    private static async Task<List<string>> DeferAsync(BursarProcess gw, string key, int count, string feature, bool anthropic = false)
    {
        using var http = new HttpClient { BaseAddress = new Uri(gw.BaseUrl) };
        var locations = new List<string>();
        for (var i = 0; i < count; i++)
        {
            using var req = new HttpRequestMessage(HttpMethod.Post, anthropic ? "/v1/messages" : "/v1/chat/completions")
            {
                Content = new StringContent(anthropic ? DeferralGatewayTests.AnthropicBody($"job {i} of {feature}") : DeferralGatewayTests.OpenAIBody($"job {i} of {feature}"), Encoding.UTF8, "application/json"),
            };
            if (anthropic) { req.Headers.Add("x-api-key", key); req.Headers.Add("anthropic-version", "2023-06-01"); }
            else req.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key);
            req.Headers.Add("x-bursar-defer", "24h");
            req.Headers.Add("x-bursar-feature", feature);
            using var resp = await http.SendAsync(req);
            Assert.Equal(HttpStatusCode.Accepted, resp.StatusCode);
            locations.Add(resp.Headers.Location!.ToString());
        }
        return locations;
    }

    /// <summary>After the restart: every job answers 200 with its body, and the ledger holds exactly one row per job.</summary>
    private async Task AssertEveryJobEndedOnceAsync(BursarProcess gw, string key, IReadOnlyList<string> locations, string feature)
    {
        using var http = new HttpClient { BaseAddress = new Uri(gw.BaseUrl) };
        foreach (var l in locations)
        {
            var (status, body) = await DeferralGatewayTests.AwaitJob(http, key, l, waitMs: 30_000);
            Assert.True(status == HttpStatusCode.OK, $"{l}: {status} {body}\n{gw.Log}");
        }
        var store = new SqliteStore(Path.Combine(_dir, "bursar.db"));
        IReadOnlyList<LedgerRecord> rows = [];
        for (var i = 0; i < 200; i++)
        {
            rows = (await store.ReadAsync(new LedgerQuery { Limit = 1_000_000 }, default)).Where(r => r.Feature == feature).ToArray();
            if (rows.Count >= locations.Count) break;
            await Task.Delay(50);
        }
        var jobIds = locations.Select(l => l[(l.LastIndexOf('/') + 1)..]).ToHashSet();
        Assert.Equal(locations.Count, rows.Count);
        Assert.Equal(jobIds, rows.Select(r => r.CustomId!).ToHashSet()); // one row per job, none twice
        Assert.All(rows, r => Assert.Equal(BatchLedger.RecordId("job", r.CustomId!), r.Id));
        var jobs = await ((IJobStore)store).ListJobsAsync(null, 100_000, default);
        Assert.All(jobs.Where(j => jobIds.Contains(j.Id)), j => Assert.Equal(JobState.Done, j.State));
    }

    [Fact]
    public async Task Killed_after_jobs_are_accepted_and_before_the_flush_every_job_ends_once()
    {
        var key = await BursarProcess.CreateKeyAsync(_dir);
        List<string> locations;
        await using (var gw = await BursarProcess.StartAsync(_dir, BursarProcess.FreePort(), Serve("--Bursar:Deferral:MaxWait=01:00:00")))
        {
            locations = await DeferAsync(gw, key, 5, "crash-queued");
            gw.Kill(); // SIGKILL with five jobs queued, none flushed
        }
        await using var again = await BursarProcess.StartAsync(_dir, BursarProcess.FreePort(), Serve("--Bursar:Deferral:MaxWait=00:00:00.100"));
        await AssertEveryJobEndedOnceAsync(again, key, locations, "crash-queued");
    }

    [Fact]
    public async Task Killed_between_the_provider_accepting_a_batch_and_Bursar_recording_its_id_the_batch_is_reconciled()
    {
        var key = await BursarProcess.CreateKeyAsync(_dir);
        var simulator = Path.Combine(_dir, "simulator");
        List<string> locations;
        await using (var gw = await BursarProcess.StartAsync(_dir, BursarProcess.FreePort(), Serve("--Bursar:Deferral:MaxWait=00:00:00.100", "--Bursar:Simulator:BatchAcceptDelay=00:01:00")))
        {
            locations = await DeferAsync(gw, key, 3, "crash-accepted");
            // the Simulator has saved the batch and holds its answer back: the provider has it, Bursar has no id for it
            for (var i = 0; i < 200 && !(Directory.Exists(simulator) && Directory.EnumerateFiles(simulator, "batch_*.batch.json").Any()); i++) await Task.Delay(50);
            Assert.NotEmpty(Directory.EnumerateFiles(simulator, "batch_*.batch.json"));
            gw.Kill();
        }
        await using var again = await BursarProcess.StartAsync(_dir, BursarProcess.FreePort(), Serve("--Bursar:Deferral:MaxWait=00:00:00.100"));
        await AssertEveryJobEndedOnceAsync(again, key, locations, "crash-accepted");
        // found by the metadata Bursar attached, not submitted a second time: the provider ran each job once (the jobs queued behind
        // the interrupted flush may have gone in a batch of their own after the restart)
        var sent = Directory.EnumerateFiles(simulator, "batch_*.batch.json").Sum(f => System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(f))!["total"]!.GetValue<int>());
        Assert.Equal(locations.Count, sent);
        Assert.Contains("was found at the provider", again.Log);
    }

    [Fact]
    public async Task Killed_between_Anthropic_accepting_a_batch_of_jobs_and_Bursar_recording_its_id_the_batch_is_reconciled()
    {
        var key = await BursarProcess.CreateKeyAsync(_dir);
        var simulator = Path.Combine(_dir, "simulator");
        List<string> locations;
        await using (var gw = await BursarProcess.StartAsync(_dir, BursarProcess.FreePort(), Serve("--Bursar:Deferral:MaxWait=00:00:00.100", "--Bursar:Simulator:BatchAcceptDelay=00:01:00")))
        {
            locations = await DeferAsync(gw, key, 3, "crash-accepted-anthropic", anthropic: true);
            // the Simulator has saved the message batch and holds its answer back: Anthropic has it, Bursar has no id for it
            for (var i = 0; i < 200 && !(Directory.Exists(simulator) && Directory.EnumerateFiles(simulator, "msgbatch_*.batch.json").Any()); i++) await Task.Delay(50);
            Assert.NotEmpty(Directory.EnumerateFiles(simulator, "msgbatch_*.batch.json"));
            gw.Kill();
        }
        await using var again = await BursarProcess.StartAsync(_dir, BursarProcess.FreePort(), Serve("--Bursar:Deferral:MaxWait=00:00:00.100"));
        await AssertEveryJobEndedOnceAsync(again, key, locations, "crash-accepted-anthropic");
        // message batches carry no metadata: found by time, size and (once ended) its lines, never submitted a second time
        var sent = Directory.EnumerateFiles(simulator, "msgbatch_*.batch.json").Sum(f => System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(f))!["total"]!.GetValue<int>());
        Assert.Equal(locations.Count, sent);
        Assert.Contains("was found at the provider", again.Log);
    }

    [Fact]
    public async Task Killed_while_Anthropic_accepts_a_callers_message_batch_its_lines_are_still_metered_once()
    {
        var key = await BursarProcess.CreateKeyAsync(_dir);
        var simulator = Path.Combine(_dir, "simulator");
        const string feature = "crash-passthrough-anthropic";
        var body = new System.Text.Json.Nodes.JsonObject
        {
            ["requests"] = new System.Text.Json.Nodes.JsonArray(Enumerable.Range(0, 4).Select(i => (System.Text.Json.Nodes.JsonNode)new System.Text.Json.Nodes.JsonObject
            {
                ["custom_id"] = $"line-{i}",
                ["params"] = System.Text.Json.Nodes.JsonNode.Parse(DeferralGatewayTests.AnthropicBody($"line {i}")),
            }).ToArray()),
        }.ToJsonString();
        await using (var gw = await BursarProcess.StartAsync(_dir, BursarProcess.FreePort(), Serve("--Bursar:Simulator:BatchAcceptDelay=00:01:00")))
        {
            using var http = new HttpClient { BaseAddress = new Uri(gw.BaseUrl) };
            using var req = new HttpRequestMessage(HttpMethod.Post, "/v1/messages/batches") { Content = new StringContent(body, Encoding.UTF8, "application/json") };
            req.Headers.Add("x-api-key", key);
            req.Headers.Add("anthropic-version", "2023-06-01");
            req.Headers.Add("x-bursar-feature", feature);
            var pending = http.SendAsync(req); // never answered: the provider holds the batch back, then the gateway dies
            for (var i = 0; i < 200 && !(Directory.Exists(simulator) && Directory.EnumerateFiles(simulator, "msgbatch_*.batch.json").Any()); i++) await Task.Delay(50);
            Assert.NotEmpty(Directory.EnumerateFiles(simulator, "msgbatch_*.batch.json"));
            gw.Kill();
            await Assert.ThrowsAnyAsync<Exception>(() => pending);
        }
        await using var again = await BursarProcess.StartAsync(_dir, BursarProcess.FreePort(), Serve());
        var store = new SqliteStore(Path.Combine(_dir, "bursar.db"));
        IReadOnlyList<LedgerRecord> rows = [];
        for (var i = 0; i < 400 && rows.Count < 4; i++)
        {
            rows = (await store.ReadAsync(new LedgerQuery { Limit = 1_000_000 }, default)).Where(r => r.Feature == feature).ToArray();
            await Task.Delay(50);
        }
        await Task.Delay(300); // a second write of any line would have landed by now
        rows = (await store.ReadAsync(new LedgerQuery { Limit = 1_000_000 }, default)).Where(r => r.Feature == feature).ToArray();
        Assert.True(rows.Count == 4, $"{rows.Count} rows\n{again.Log}");
        Assert.Equal(Enumerable.Range(0, 4).Select(i => $"line-{i}").ToHashSet(), rows.Select(r => r.CustomId!).ToHashSet());
        Assert.All(rows, r => Assert.Equal(("ok", true), (r.Outcome, r.Batch)));
        var batch = Assert.Single(await ((IBatchStore)store).ListBatchesAsync(null, "anthropic", 100, default), b => b.Feature == feature);
        Assert.Equal((BatchPhase.Ended, true), (batch.Phase, batch.Collected));
        Assert.StartsWith("msgbatch_", batch.UpstreamId);
        Assert.Contains("was found at the provider", again.Log);
    }

    [Fact]
    public async Task Killed_while_results_are_being_written_every_line_is_written_once()
    {
        var key = await BursarProcess.CreateKeyAsync(_dir);
        const int jobs = 1500;
        List<string> locations;
        var sawPartial = false;
        await using (var gw = await BursarProcess.StartAsync(_dir, BursarProcess.FreePort(), Serve("--Bursar:Deferral:MaxWait=01:00:00", "--Bursar:Deferral:MaxBatchSize=1500")))
        {
            locations = await DeferAsync(gw, key, jobs, "crash-results");
            // the queue is full: the batch goes, ends at its first poll, and its 1,500 rows are written: kill as soon as the first lands
            using var c = new SqliteConnection($"Data Source={Path.Combine(_dir, "bursar.db")};Mode=ReadOnly");
            c.Open();
            using var cmd = c.CreateCommand();
            cmd.CommandText = "SELECT COUNT(*) FROM ledger WHERE feature = 'crash-results'";
            for (var i = 0; i < 2000; i++)
            {
                var n = (long)cmd.ExecuteScalar()!;
                if (n > 0)
                {
                    gw.Kill();
                    sawPartial = n < jobs;
                    break;
                }
                await Task.Delay(5);
            }
            gw.Kill();
        }
        await using var again = await BursarProcess.StartAsync(_dir, BursarProcess.FreePort(), Serve("--Bursar:Deferral:MaxWait=00:00:00.100"));
        await AssertEveryJobEndedOnceAsync(again, key, locations, "crash-results");
        Console.WriteLine($"kill landed with part of the rows written: {sawPartial}");
    }
}

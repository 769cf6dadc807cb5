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

    private static async Task<List<string>> DeferAsync(BursarProcess gw, string key, int count, string feature)
    {
        using var http = new HttpClient { BaseAddress = new Uri(gw.BaseUrl) };
        var locations = new List<string>();
        for (var i = 0; i < count; i++)
        {
            using var req = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions") { Content = new StringContent(DeferralGatewayTests.OpenAIBody($"job {i} of {feature}"), Encoding.UTF8, "application/json") };
            req.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key);
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

using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using Bursar.Core.Batch;

namespace Bursar.Gateway.Tests;

/// <summary><c>bursar batches list|show|report</c> and <c>bursar jobs list|show|cancel</c> on a data directory a gateway filled.</summary>
[Collection("processes")]
public sealed class BatchCliTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "bursar-batchcli-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }

    [Fact]
    public async Task Batches_and_jobs_are_listed_shown_reported_and_a_queued_job_canceled()
    {
        string batchId, doneJob, queuedJob;
        await using (var gw = await BatchHost.StartAsync(_dir, [.. DeferralGatewayTests.FastFlush, "--Bursar:Deferral:MaxBatchSize=2", "--Bursar:Deferral:MaxWait=01:00:00"]))
        {
            var key = await gw.KeyAsync();
            var (_, file) = await BatchGatewayTests.Send(gw.Http, HttpMethod.Post, "/v1/files", key, BatchGatewayTests.Upload(BatchGatewayTests.ChatLine("c1", "one") + "\n" + BatchGatewayTests.ChatLine("c2", "two [[sim:batch=error]]")), feature: "cli");
            var (_, batch) = await BatchGatewayTests.Send(gw.Http, HttpMethod.Post, "/v1/batches", key,
                new StringContent($$"""{"input_file_id":"{{file!["id"]}}","endpoint":"/v1/chat/completions","completion_window":"24h"}""", Encoding.UTF8, "application/json"), feature: "cli");
            batchId = batch!["id"]!.GetValue<string>();
            Assert.Equal(2, (await gw.RowsAsync(r => r.BatchId == batchId, 2)).Count);
            // two jobs fill a batch (MaxBatchSize 2) and end; a third waits (MaxWait one hour)
            var locations = new List<string>();
            for (var i = 0; i < 3; i++)
            {
                var (s, _, r) = await DeferralGatewayTests.Call(gw.Http, key, "/v1/chat/completions", DeferralGatewayTests.OpenAIBody("cli job " + i, i == 2 ? "gpt-4.1-mini" : "gpt-4o-mini"), "cli-jobs", defer: "24h");
                Assert.Equal(HttpStatusCode.Accepted, s);
                locations.Add(r.Headers.Location!.ToString());
            }
            Assert.Equal(HttpStatusCode.OK, (await DeferralGatewayTests.AwaitJob(gw.Http, key, locations[0])).Status);
            doneJob = locations[0][(locations[0].LastIndexOf('/') + 1)..];
            queuedJob = locations[2][(locations[2].LastIndexOf('/') + 1)..];
            Assert.Equal(HttpStatusCode.Accepted, (await DeferralGatewayTests.AwaitJob(gw.Http, key, locations[2], waitMs: 0)).Status);
        }

        var (code, list, err) = await BursarProcess.RunAsync(_dir, "batches", "list");
        Assert.True(code == 0, err);
        Assert.Contains(batchId, list);
        Assert.Contains("deferred jobs", list);
        var (c2, show, e2) = await BursarProcess.RunAsync(_dir, "batches", "show", batchId);
        Assert.True(c2 == 0, e2);
        Assert.Contains("client_error", show);
        Assert.Contains("TOTAL", show);
        var (c3, report, e3) = await BursarProcess.RunAsync(_dir, "batches", "report");
        Assert.True(c3 == 0, e3);
        Assert.Contains("batch share", report);
        var (c4, jobs, e4) = await BursarProcess.RunAsync(_dir, "jobs", "list");
        Assert.True(c4 == 0, e4);
        Assert.Contains(queuedJob, jobs);
        var (c5, job, e5) = await BursarProcess.RunAsync(_dir, "jobs", "show", doneJob);
        Assert.True(c5 == 0, e5);
        Assert.Contains("done", job);
        Assert.Contains("batch rate", job);

        var (c6, _, e6) = await BursarProcess.RunAsync(_dir, "jobs", "cancel", queuedJob);
        Assert.True(c6 == 0, e6);
        var (c7, canceled, _) = await BursarProcess.RunAsync(_dir, "jobs", "show", queuedJob);
        Assert.Equal(0, c7);
        Assert.Contains("canceled", canceled);
        Assert.Contains("cost $0", canceled);
        var (c8, _, again) = await BursarProcess.RunAsync(_dir, "jobs", "cancel", queuedJob);
        Assert.Equal(1, c8);
        Assert.Contains("only a queued job can be canceled", again);
        var (c9, _, notDone) = await BursarProcess.RunAsync(_dir, "jobs", "cancel", doneJob);
        Assert.Equal(1, c9);
        Assert.Contains("is done", notDone);
        var (c10, _, bad) = await BursarProcess.RunAsync(_dir, "jobs", "list", "--state", "sleeping");
        Assert.Equal(2, c10);
        Assert.Contains("sleeping", bad);
        var (c11, _, missing) = await BursarProcess.RunAsync(_dir, "batches", "show", "batch_nope");
        Assert.Equal(1, c11);
        Assert.Contains("batch_nope", missing);
    }
}

using System.Net;
using System.Text;
using Bursar.Core.Batch;
using Bursar.Storage.PostgreSql;
using Microsoft.Extensions.DependencyInjection;

namespace Bursar.Gateway.Tests;

/// <summary>The batch lever on <c>Bursar:Store=postgres</c>: migration 2's tables hold batches, files and jobs; rows carry batch_id and custom_id.</summary>
public sealed class BatchPostgresTests(PostgresServer pg) : IClassFixture<PostgresServer>
{
    [Fact]
    public async Task A_pass_through_batch_and_a_deferred_job_on_postgres_each_line_one_row()
    {
        var cs = await pg.CreateDatabaseAsync();
        var dir = Path.Combine(Path.GetTempPath(), "bursar-batch-pg-" + Guid.NewGuid().ToString("N"));
        try
        {
            await using var gw = await BatchHost.StartAsync(dir, ["--Bursar:Store=postgres", $"--Bursar:Postgres:ConnectionString={cs}", .. DeferralGatewayTests.FastFlush]);
            Assert.IsType<PostgresStore>(gw.Services.GetRequiredService<IBatchStore>());
            Assert.Contains(2, PostgresMigrations.Applied(((PostgresStore)gw.Store).DataSource));
            var key = await gw.KeyAsync();
            var (fs, file) = await BatchGatewayTests.Send(gw.Http, HttpMethod.Post, "/v1/files", key, BatchGatewayTests.Upload(BatchGatewayTests.ChatLine("pg-1", "one") + "\n" + BatchGatewayTests.ChatLine("pg-2", "two [[sim:batch=error]]")), feature: "pg-batch");
            Assert.Equal(HttpStatusCode.OK, fs);
            var (bs, batch) = await BatchGatewayTests.Send(gw.Http, HttpMethod.Post, "/v1/batches", key,
                new StringContent($$"""{"input_file_id":"{{file!["id"]}}","endpoint":"/v1/chat/completions","completion_window":"24h"}""", Encoding.UTF8, "application/json"), feature: "pg-batch");
            Assert.Equal(HttpStatusCode.OK, bs);
            var id = batch!["id"]!.GetValue<string>();
            var rows = await gw.RowsAsync(r => r.BatchId == id, 2);
            Assert.Equal(["pg-1", "pg-2"], rows.Select(r => r.CustomId!).Order());
            Assert.All(rows, r => Assert.True(r.Batch));

            var (s, _, resp) = await DeferralGatewayTests.Call(gw.Http, key, "/v1/chat/completions", DeferralGatewayTests.OpenAIBody("pg job"), "pg-job", defer: "1h");
            Assert.Equal(HttpStatusCode.Accepted, s);
            Assert.Equal(HttpStatusCode.OK, (await DeferralGatewayTests.AwaitJob(gw.Http, key, resp.Headers.Location!.ToString())).Status);
            var job = Assert.Single(await gw.RowsAsync(r => r.Feature == "pg-job", 1));
            Assert.Equal(BatchLedger.RecordId("job", job.CustomId!), job.Id);
            var done = await ((IJobStore)gw.Store).ListJobsAsync(JobState.Done, 10, default);
            Assert.Contains(done, j => j.Id == job.CustomId);
        }
        finally
        {
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
            try { Directory.Delete(dir, true); } catch (IOException) { }
        }
    }
}

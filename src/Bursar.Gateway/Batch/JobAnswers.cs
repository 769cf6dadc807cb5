using System.Text.Json.Nodes;
using Bursar.Core.Batch;
using Bursar.Gateway.Auth;
using Bursar.Gateway.Proxy;
using Bursar.Providers.Dialects;
using Microsoft.AspNetCore.Http;

namespace Bursar.Gateway.Batch;

/// <summary>
/// What the caller of a deferred call hears: <c>202 Accepted</c> with the job's id and a <c>Location</c> at once, then
/// <c>GET /v1/bursar/jobs/{id}</c>: 202 while it waits, then exactly the status and body the synchronous call would have
/// returned (or the error it ended with). A key sees only its own jobs.
/// </summary>
public sealed class JobAnswers(KeyAuthenticator auth, IJobStore jobs, IBatchStore batches, BatchCollector collector)
{
    public static string Location(string id) => "/v1/bursar/jobs/" + id;

    /// <summary>The answer to the deferred call itself.</summary>
    public static async Task AcceptedAsync(HttpContext ctx, string id)
    {
        ctx.Response.StatusCode = StatusCodes.Status202Accepted;
        ctx.Response.Headers.Location = Location(id);
        ctx.Response.Headers["x-bursar-job"] = id;
        ctx.Response.Headers.RetryAfter = "30";
        ctx.Response.ContentType = "application/json";
        await ctx.Response.WriteAsync(Pending(id, JobState.Queued), ctx.RequestAborted).ConfigureAwait(false);
    }

    private static string Pending(string id, JobState state) => new JsonObject
    {
        ["id"] = id, ["object"] = "bursar.job", ["status"] = state.ToString().ToLowerInvariant(), ["location"] = Location(id),
    }.ToJsonString();

    public async Task GetAsync(HttpContext ctx, string id)
    {
        var dialect = ctx.Request.Headers.ContainsKey("anthropic-version") || ctx.Request.Headers.ContainsKey("x-api-key") ? Dialect.Anthropic : Dialect.OpenAI;
        var (key, error) = await auth.AuthenticateAsync(ctx.Request, ctx.RequestAborted).ConfigureAwait(false);
        if (error is not null)
        {
            await CallerAnswer.WriteErrorAsync(ctx, dialect, error).ConfigureAwait(false);
            return;
        }
        var job = await jobs.FindJobAsync(id, ctx.RequestAborted).ConfigureAwait(false);
        if (job is null || job.KeyId != key!.Id)
        {
            await CallerAnswer.WriteErrorAsync(ctx, dialect, new ProviderError(404, $"No deferred job found with id '{id}'.") { Param = "id" }).ConfigureAwait(false);
            return;
        }
        if (job.State == JobState.Submitted && job.BatchId is not null && await batches.FindBatchAsync(job.BatchId, ctx.RequestAborted).ConfigureAwait(false) is { Collected: false } b)
        {
            // ask the provider now rather than at the next poll: an ended batch has its rows and answers before the caller reads one
            try
            {
                await collector.RefreshAsync(b, ctx.RequestAborted).ConfigureAwait(false);
            }
            catch (Exception e) when (e is HttpRequestException or TimeoutException or IOException)
            {
                // the poller tries again; the caller hears the job is still pending
            }
            job = await jobs.FindJobAsync(id, ctx.RequestAborted).ConfigureAwait(false) ?? job;
        }
        if (job.State is JobState.Queued or JobState.Submitted)
        {
            ctx.Response.StatusCode = StatusCodes.Status202Accepted;
            ctx.Response.Headers.Location = Location(id);
            ctx.Response.Headers.RetryAfter = "30";
            ctx.Response.ContentType = "application/json";
            await ctx.Response.WriteAsync(Pending(id, job.State), ctx.RequestAborted).ConfigureAwait(false);
            return;
        }
        var jobDialect = job.Dialect == "anthropic" ? Dialect.Anthropic : Dialect.OpenAI;
        if (job.Result is not { } body)
        {
            var e = new ProviderError(job.State == JobState.Canceled ? 409 : job.StatusCode is >= 400 ? job.StatusCode : 504, $"Deferred job {id} {(job.State == JobState.Canceled ? "was canceled" : "failed")}: {job.Error ?? "no reason recorded"}.", ErrorSource.Gateway);
            await CallerAnswer.WriteErrorAsync(ctx, jobDialect, e).ConfigureAwait(false);
            return;
        }
        ctx.Response.StatusCode = job.StatusCode is >= 200 and <= 599 ? job.StatusCode : 200;
        ctx.Response.ContentType = "application/json";
        ctx.Response.Headers["x-bursar-job"] = id;
        await ctx.Response.Body.WriteAsync(body, ctx.RequestAborted).ConfigureAwait(false);
    }
}

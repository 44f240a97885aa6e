from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TfdsSource(_message.Message):
    __slots__ = ("name", "train_split", "validation_split", "test_split", "data_dir", "image_key", "label_key")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TRAIN_SPLIT_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_SPLIT_FIELD_NUMBER: _ClassVar[int]
    TEST_SPLIT_FIELD_NUMBER: _ClassVar[int]
    DATA_DIR_FIELD_NUMBER: _ClassVar[int]
    IMAGE_KEY_FIELD_NUMBER: _ClassVar[int]
    LABEL_KEY_FIELD_NUMBER: _ClassVar[int]
    name: str
    train_split: str
    validation_split: str
    test_split: str
    data_dir: str
    image_key: str
    label_key: str
    def __init__(self, name: _Optional[str] = ..., train_split: _Optional[str] = ..., validation_split: _Optional[str] = ..., test_split: _Optional[str] = ..., data_dir: _Optional[str] = ..., image_key: _Optional[str] = ..., label_key: _Optional[str] = ...) -> None: ...

class FilesSource(_message.Message):
    __slots__ = ("npz", "folder", "tfrecord", "validation", "test", "validation_fraction", "test_fraction", "image_key", "label_key", "split_seed")
    NPZ_FIELD_NUMBER: _ClassVar[int]
    FOLDER_FIELD_NUMBER: _ClassVar[int]
    TFRECORD_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_FIELD_NUMBER: _ClassVar[int]
    TEST_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_FRACTION_FIELD_NUMBER: _ClassVar[int]
    TEST_FRACTION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_KEY_FIELD_NUMBER: _ClassVar[int]
    LABEL_KEY_FIELD_NUMBER: _ClassVar[int]
    SPLIT_SEED_FIELD_NUMBER: _ClassVar[int]
    npz: str
    folder: str
    tfrecord: str
    validation: str
    test: str
    validation_fraction: float
    test_fraction: float
    image_key: str
    label_key: str
    split_seed: int
    def __init__(self, npz: _Optional[str] = ..., folder: _Optional[str] = ..., tfrecord: _Optional[str] = ..., validation: _Optional[str] = ..., test: _Optional[str] = ..., validation_fraction: _Optional[float] = ..., test_fraction: _Optional[float] = ..., image_key: _Optional[str] = ..., label_key: _Optional[str] = ..., split_seed: _Optional[int] = ...) -> None: ...

class BuiltinSource(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class Access(_message.Message):
    __slots__ = ("visibility", "groups")
    class Visibility(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        VISIBILITY_UNSPECIFIED: _ClassVar[Access.Visibility]
        PUBLIC: _ClassVar[Access.Visibility]
        PRIVATE: _ClassVar[Access.Visibility]
        GROUPS: _ClassVar[Access.Visibility]
    VISIBILITY_UNSPECIFIED: Access.Visibility
    PUBLIC: Access.Visibility
    PRIVATE: Access.Visibility
    GROUPS: Access.Visibility
    VISIBILITY_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    visibility: Access.Visibility
    groups: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, visibility: _Optional[_Union[Access.Visibility, str]] = ..., groups: _Optional[_Iterable[str]] = ...) -> None: ...

class TaskSpec(_message.Message):
    __slots__ = ("name", "num_classes", "tfds", "files", "builtin", "channels", "access")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    TFDS_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    BUILTIN_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    ACCESS_FIELD_NUMBER: _ClassVar[int]
    name: str
    num_classes: int
    tfds: TfdsSource
    files: FilesSource
    builtin: BuiltinSource
    channels: int
    access: Access
    def __init__(self, name: _Optional[str] = ..., num_classes: _Optional[int] = ..., tfds: _Optional[_Union[TfdsSource, _Mapping]] = ..., files: _Optional[_Union[FilesSource, _Mapping]] = ..., builtin: _Optional[_Union[BuiltinSource, _Mapping]] = ..., channels: _Optional[int] = ..., access: _Optional[_Union[Access, _Mapping]] = ...) -> None: ...

class RootModel(_message.Message):
    __slots__ = ("vit", "custom", "num_blocks", "image_size", "channels", "checkpoint", "seed", "pretrain")
    VIT_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_FIELD_NUMBER: _ClassVar[int]
    NUM_BLOCKS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    PRETRAIN_FIELD_NUMBER: _ClassVar[int]
    vit: str
    custom: VitArchitecture
    num_blocks: int
    image_size: int
    channels: int
    checkpoint: str
    seed: int
    pretrain: RootPretraining
    def __init__(self, vit: _Optional[str] = ..., custom: _Optional[_Union[VitArchitecture, _Mapping]] = ..., num_blocks: _Optional[int] = ..., image_size: _Optional[int] = ..., channels: _Optional[int] = ..., checkpoint: _Optional[str] = ..., seed: _Optional[int] = ..., pretrain: _Optional[_Union[RootPretraining, _Mapping]] = ...) -> None: ...

class RootPretraining(_message.Message):
    __slots__ = ("task", "epochs", "max_batches_per_epoch", "batch_size", "hparams")
    class HparamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: HParamValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[HParamValue, _Mapping]] = ...) -> None: ...
    TASK_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCHES_PER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    HPARAMS_FIELD_NUMBER: _ClassVar[int]
    task: TaskSpec
    epochs: int
    max_batches_per_epoch: int
    batch_size: int
    hparams: _containers.MessageMap[str, HParamValue]
    def __init__(self, task: _Optional[_Union[TaskSpec, _Mapping]] = ..., epochs: _Optional[int] = ..., max_batches_per_epoch: _Optional[int] = ..., batch_size: _Optional[int] = ..., hparams: _Optional[_Mapping[str, HParamValue]] = ...) -> None: ...

class VitArchitecture(_message.Message):
    __slots__ = ("patch_size", "hidden_size", "num_layers", "num_heads", "mlp_dim", "gelu_approximate", "layer_norm_epsilon")
    PATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_SIZE_FIELD_NUMBER: _ClassVar[int]
    NUM_LAYERS_FIELD_NUMBER: _ClassVar[int]
    NUM_HEADS_FIELD_NUMBER: _ClassVar[int]
    MLP_DIM_FIELD_NUMBER: _ClassVar[int]
    GELU_APPROXIMATE_FIELD_NUMBER: _ClassVar[int]
    LAYER_NORM_EPSILON_FIELD_NUMBER: _ClassVar[int]
    patch_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    mlp_dim: int
    gelu_approximate: bool
    layer_norm_epsilon: float
    def __init__(self, patch_size: _Optional[int] = ..., hidden_size: _Optional[int] = ..., num_layers: _Optional[int] = ..., num_heads: _Optional[int] = ..., mlp_dim: _Optional[int] = ..., gelu_approximate: _Optional[bool] = ..., layer_norm_epsilon: _Optional[float] = ...) -> None: ...

class HParamValue(_message.Message):
    __slots__ = ("number", "flag", "choice")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    FLAG_FIELD_NUMBER: _ClassVar[int]
    CHOICE_FIELD_NUMBER: _ClassVar[int]
    number: float
    flag: bool
    choice: str
    def __init__(self, number: _Optional[float] = ..., flag: _Optional[bool] = ..., choice: _Optional[str] = ...) -> None: ...

class HParamSpec(_message.Message):
    __slots__ = ("name", "values", "default_value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    values: _containers.RepeatedCompositeFieldContainer[HParamValue]
    default_value: HParamValue
    def __init__(self, name: _Optional[str] = ..., values: _Optional[_Iterable[_Union[HParamValue, _Mapping]]] = ..., default_value: _Optional[_Union[HParamValue, _Mapping]] = ...) -> None: ...

class SearchSpace(_message.Message):
    __slots__ = ("param",)
    PARAM_FIELD_NUMBER: _ClassVar[int]
    param: _containers.RepeatedCompositeFieldContainer[HParamSpec]
    def __init__(self, param: _Optional[_Iterable[_Union[HParamSpec, _Mapping]]] = ...) -> None: ...

class ScoreConfig(_message.Message):
    __slots__ = ("scale_factor", "flops_factor")
    SCALE_FACTOR_FIELD_NUMBER: _ClassVar[int]
    FLOPS_FACTOR_FIELD_NUMBER: _ClassVar[int]
    scale_factor: float
    flops_factor: float
    def __init__(self, scale_factor: _Optional[float] = ..., flops_factor: _Optional[float] = ...) -> None: ...

class EvolutionConfig(_message.Message):
    __slots__ = ("task_iterations", "generations", "children_per_generation", "epochs_per_child", "max_batches_per_epoch", "batch_size", "score", "seed", "parent_sampling", "mutation_probability", "child_parallelism", "layer_addition")
    class ParentSampling(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        PARENT_SAMPLING_UNSPECIFIED: _ClassVar[EvolutionConfig.ParentSampling]
        MU2NET: _ClassVar[EvolutionConfig.ParentSampling]
        MUNET: _ClassVar[EvolutionConfig.ParentSampling]
    PARENT_SAMPLING_UNSPECIFIED: EvolutionConfig.ParentSampling
    MU2NET: EvolutionConfig.ParentSampling
    MUNET: EvolutionConfig.ParentSampling
    class MutationProbability(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        MUTATION_PROBABILITY_UNSPECIFIED: _ClassVar[EvolutionConfig.MutationProbability]
        SHARED: _ClassVar[EvolutionConfig.MutationProbability]
        PER_ACTION: _ClassVar[EvolutionConfig.MutationProbability]
        PER_TARGET: _ClassVar[EvolutionConfig.MutationProbability]
    MUTATION_PROBABILITY_UNSPECIFIED: EvolutionConfig.MutationProbability
    SHARED: EvolutionConfig.MutationProbability
    PER_ACTION: EvolutionConfig.MutationProbability
    PER_TARGET: EvolutionConfig.MutationProbability
    class ChildParallelism(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        CHILD_PARALLELISM_UNSPECIFIED: _ClassVar[EvolutionConfig.ChildParallelism]
        DEVICE_PER_CHILD: _ClassVar[EvolutionConfig.ChildParallelism]
        DATA_PARALLEL: _ClassVar[EvolutionConfig.ChildParallelism]
    CHILD_PARALLELISM_UNSPECIFIED: EvolutionConfig.ChildParallelism
    DEVICE_PER_CHILD: EvolutionConfig.ChildParallelism
    DATA_PARALLEL: EvolutionConfig.ChildParallelism
    class LayerAddition(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        LAYER_ADDITION_UNSPECIFIED: _ClassVar[EvolutionConfig.LayerAddition]
        OFF: _ClassVar[EvolutionConfig.LayerAddition]
        RANDOM: _ClassVar[EvolutionConfig.LayerAddition]
        ROOT_THEN_RANDOM: _ClassVar[EvolutionConfig.LayerAddition]
    LAYER_ADDITION_UNSPECIFIED: EvolutionConfig.LayerAddition
    OFF: EvolutionConfig.LayerAddition
    RANDOM: EvolutionConfig.LayerAddition
    ROOT_THEN_RANDOM: EvolutionConfig.LayerAddition
    TASK_ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    GENERATIONS_FIELD_NUMBER: _ClassVar[int]
    CHILDREN_PER_GENERATION_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_PER_CHILD_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCHES_PER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    PARENT_SAMPLING_FIELD_NUMBER: _ClassVar[int]
    MUTATION_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    CHILD_PARALLELISM_FIELD_NUMBER: _ClassVar[int]
    LAYER_ADDITION_FIELD_NUMBER: _ClassVar[int]
    task_iterations: int
    generations: int
    children_per_generation: int
    epochs_per_child: int
    max_batches_per_epoch: int
    batch_size: int
    score: ScoreConfig
    seed: int
    parent_sampling: EvolutionConfig.ParentSampling
    mutation_probability: EvolutionConfig.MutationProbability
    child_parallelism: EvolutionConfig.ChildParallelism
    layer_addition: EvolutionConfig.LayerAddition
    def __init__(self, task_iterations: _Optional[int] = ..., generations: _Optional[int] = ..., children_per_generation: _Optional[int] = ..., epochs_per_child: _Optional[int] = ..., max_batches_per_epoch: _Optional[int] = ..., batch_size: _Optional[int] = ..., score: _Optional[_Union[ScoreConfig, _Mapping]] = ..., seed: _Optional[int] = ..., parent_sampling: _Optional[_Union[EvolutionConfig.ParentSampling, str]] = ..., mutation_probability: _Optional[_Union[EvolutionConfig.MutationProbability, str]] = ..., child_parallelism: _Optional[_Union[EvolutionConfig.ChildParallelism, str]] = ..., layer_addition: _Optional[_Union[EvolutionConfig.LayerAddition, str]] = ...) -> None: ...

class BaselineConfig(_message.Message):
    __slots__ = ("epochs", "max_batches_per_epoch", "batch_size", "adapter_dim", "methods", "seed", "replicas", "learning_rate", "method_learning_rate")
    class MethodLearningRateEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCHES_PER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_DIM_FIELD_NUMBER: _ClassVar[int]
    METHODS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    METHOD_LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    epochs: int
    max_batches_per_epoch: int
    batch_size: int
    adapter_dim: int
    methods: _containers.RepeatedScalarFieldContainer[str]
    seed: int
    replicas: int
    learning_rate: float
    method_learning_rate: _containers.ScalarMap[str, float]
    def __init__(self, epochs: _Optional[int] = ..., max_batches_per_epoch: _Optional[int] = ..., batch_size: _Optional[int] = ..., adapter_dim: _Optional[int] = ..., methods: _Optional[_Iterable[str]] = ..., seed: _Optional[int] = ..., replicas: _Optional[int] = ..., learning_rate: _Optional[float] = ..., method_learning_rate: _Optional[_Mapping[str, float]] = ...) -> None: ...

class DistributionConfig(_message.Message):
    __slots__ = ("strategy", "tpu", "num_gpus")
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    TPU_FIELD_NUMBER: _ClassVar[int]
    NUM_GPUS_FIELD_NUMBER: _ClassVar[int]
    strategy: str
    tpu: str
    num_gpus: int
    def __init__(self, strategy: _Optional[str] = ..., tpu: _Optional[str] = ..., num_gpus: _Optional[int] = ...) -> None: ...

class SystemConfig(_message.Message):
    __slots__ = ("name", "root", "search_space", "evolution", "baselines", "distribution", "task")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROOT_FIELD_NUMBER: _ClassVar[int]
    SEARCH_SPACE_FIELD_NUMBER: _ClassVar[int]
    EVOLUTION_FIELD_NUMBER: _ClassVar[int]
    BASELINES_FIELD_NUMBER: _ClassVar[int]
    DISTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    name: str
    root: RootModel
    search_space: SearchSpace
    evolution: EvolutionConfig
    baselines: BaselineConfig
    distribution: DistributionConfig
    task: _containers.RepeatedCompositeFieldContainer[TaskSpec]
    def __init__(self, name: _Optional[str] = ..., root: _Optional[_Union[RootModel, _Mapping]] = ..., search_space: _Optional[_Union[SearchSpace, _Mapping]] = ..., evolution: _Optional[_Union[EvolutionConfig, _Mapping]] = ..., baselines: _Optional[_Union[BaselineConfig, _Mapping]] = ..., distribution: _Optional[_Union[DistributionConfig, _Mapping]] = ..., task: _Optional[_Iterable[_Union[TaskSpec, _Mapping]]] = ...) -> None: ...

class ComponentSpec(_message.Message):
    __slots__ = ("id", "kind", "config_json", "cloned_from", "trained_on", "access", "param_count", "flops", "weights_file", "weights_sha256", "optimizer_file", "optimizer_sha256", "weight_names", "created_by_task", "created_at_ms", "optimizer_slots_kind", "provenance")
    class OptimizerSlotsKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KERAS_VELOCITY: _ClassVar[ComponentSpec.OptimizerSlotsKind]
        LR_FREE_TRACE: _ClassVar[ComponentSpec.OptimizerSlotsKind]
    KERAS_VELOCITY: ComponentSpec.OptimizerSlotsKind
    LR_FREE_TRACE: ComponentSpec.OptimizerSlotsKind
    class TrainedOnEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    CLONED_FROM_FIELD_NUMBER: _ClassVar[int]
    TRAINED_ON_FIELD_NUMBER: _ClassVar[int]
    ACCESS_FIELD_NUMBER: _ClassVar[int]
    PARAM_COUNT_FIELD_NUMBER: _ClassVar[int]
    FLOPS_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FILE_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_SHA256_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_FILE_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_SHA256_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_NAMES_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_TASK_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_SLOTS_KIND_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: str
    config_json: str
    cloned_from: str
    trained_on: _containers.ScalarMap[str, int]
    access: ComponentAccess
    param_count: int
    flops: int
    weights_file: str
    weights_sha256: str
    optimizer_file: str
    optimizer_sha256: str
    weight_names: _containers.RepeatedScalarFieldContainer[str]
    created_by_task: str
    created_at_ms: int
    optimizer_slots_kind: ComponentSpec.OptimizerSlotsKind
    provenance: ComponentProvenance
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[str] = ..., config_json: _Optional[str] = ..., cloned_from: _Optional[str] = ..., trained_on: _Optional[_Mapping[str, int]] = ..., access: _Optional[_Union[ComponentAccess, _Mapping]] = ..., param_count: _Optional[int] = ..., flops: _Optional[int] = ..., weights_file: _Optional[str] = ..., weights_sha256: _Optional[str] = ..., optimizer_file: _Optional[str] = ..., optimizer_sha256: _Optional[str] = ..., weight_names: _Optional[_Iterable[str]] = ..., created_by_task: _Optional[str] = ..., created_at_ms: _Optional[int] = ..., optimizer_slots_kind: _Optional[_Union[ComponentSpec.OptimizerSlotsKind, str]] = ..., provenance: _Optional[_Union[ComponentProvenance, _Mapping]] = ...) -> None: ...

class ComponentProvenance(_message.Message):
    __slots__ = ("source_kind", "source_file", "sha256")
    SOURCE_KIND_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FILE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    source_kind: str
    source_file: str
    sha256: str
    def __init__(self, source_kind: _Optional[str] = ..., source_file: _Optional[str] = ..., sha256: _Optional[str] = ...) -> None: ...

class ImportedRoot(_message.Message):
    __slots__ = ("architecture", "image_size", "channels", "component_ids", "head_template_id", "provenance", "gelu_approximate", "layer_norm_epsilon", "input_scale", "input_offset", "pre_logits_size", "source_num_layers", "source_image_size")
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    COMPONENT_IDS_FIELD_NUMBER: _ClassVar[int]
    HEAD_TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    GELU_APPROXIMATE_FIELD_NUMBER: _ClassVar[int]
    LAYER_NORM_EPSILON_FIELD_NUMBER: _ClassVar[int]
    INPUT_SCALE_FIELD_NUMBER: _ClassVar[int]
    INPUT_OFFSET_FIELD_NUMBER: _ClassVar[int]
    PRE_LOGITS_SIZE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_NUM_LAYERS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_IMAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    architecture: VitArchitecture
    image_size: int
    channels: int
    component_ids: _containers.RepeatedScalarFieldContainer[str]
    head_template_id: str
    provenance: ComponentProvenance
    gelu_approximate: bool
    layer_norm_epsilon: float
    input_scale: _containers.RepeatedScalarFieldContainer[float]
    input_offset: _containers.RepeatedScalarFieldContainer[float]
    pre_logits_size: int
    source_num_layers: int
    source_image_size: int
    def __init__(self, architecture: _Optional[_Union[VitArchitecture, _Mapping]] = ..., image_size: _Optional[int] = ..., channels: _Optional[int] = ..., component_ids: _Optional[_Iterable[str]] = ..., head_template_id: _Optional[str] = ..., provenance: _Optional[_Union[ComponentProvenance, _Mapping]] = ..., gelu_approximate: _Optional[bool] = ..., layer_norm_epsilon: _Optional[float] = ..., input_scale: _Optional[_Iterable[float]] = ..., input_offset: _Optional[_Iterable[float]] = ..., pre_logits_size: _Optional[int] = ..., source_num_layers: _Optional[int] = ..., source_image_size: _Optional[int] = ...) -> None: ...

class ComponentAccess(_message.Message):
    __slots__ = ("public", "tasks", "groups")
    PUBLIC_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    public: bool
    tasks: _containers.RepeatedScalarFieldContainer[str]
    groups: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, public: _Optional[bool] = ..., tasks: _Optional[_Iterable[str]] = ..., groups: _Optional[_Iterable[str]] = ...) -> None: ...

class PathMetrics(_message.Message):
    __slots__ = ("validation_accuracy", "test_accuracy", "accounted_params", "total_params", "flops", "train_steps", "train_seconds", "replica_test_accuracy")
    VALIDATION_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    TEST_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    ACCOUNTED_PARAMS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_PARAMS_FIELD_NUMBER: _ClassVar[int]
    FLOPS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_STEPS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REPLICA_TEST_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    validation_accuracy: float
    test_accuracy: float
    accounted_params: float
    total_params: int
    flops: int
    train_steps: int
    train_seconds: float
    replica_test_accuracy: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, validation_accuracy: _Optional[float] = ..., test_accuracy: _Optional[float] = ..., accounted_params: _Optional[float] = ..., total_params: _Optional[int] = ..., flops: _Optional[int] = ..., train_steps: _Optional[int] = ..., train_seconds: _Optional[float] = ..., replica_test_accuracy: _Optional[_Iterable[float]] = ...) -> None: ...

class PathSpec(_message.Message):
    __slots__ = ("id", "task", "component_ids", "hparams", "parent_id", "score", "metrics", "generation", "created_at_ms", "author", "trained_component_ids", "class_names")
    class HparamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: HParamValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[HParamValue, _Mapping]] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    COMPONENT_IDS_FIELD_NUMBER: _ClassVar[int]
    HPARAMS_FIELD_NUMBER: _ClassVar[int]
    PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    TRAINED_COMPONENT_IDS_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    id: str
    task: str
    component_ids: _containers.RepeatedScalarFieldContainer[str]
    hparams: _containers.MessageMap[str, HParamValue]
    parent_id: str
    score: float
    metrics: PathMetrics
    generation: int
    created_at_ms: int
    author: str
    trained_component_ids: _containers.RepeatedScalarFieldContainer[str]
    class_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., task: _Optional[str] = ..., component_ids: _Optional[_Iterable[str]] = ..., hparams: _Optional[_Mapping[str, HParamValue]] = ..., parent_id: _Optional[str] = ..., score: _Optional[float] = ..., metrics: _Optional[_Union[PathMetrics, _Mapping]] = ..., generation: _Optional[int] = ..., created_at_ms: _Optional[int] = ..., author: _Optional[str] = ..., trained_component_ids: _Optional[_Iterable[str]] = ..., class_names: _Optional[_Iterable[str]] = ...) -> None: ...

class SystemState(_message.Message):
    __slots__ = ("schema_version", "config", "components", "paths", "component_sources", "removed_tasks")
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    PATHS_FIELD_NUMBER: _ClassVar[int]
    COMPONENT_SOURCES_FIELD_NUMBER: _ClassVar[int]
    REMOVED_TASKS_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    config: SystemConfig
    components: _containers.RepeatedCompositeFieldContainer[ComponentSpec]
    paths: _containers.RepeatedCompositeFieldContainer[PathSpec]
    component_sources: _containers.RepeatedScalarFieldContainer[str]
    removed_tasks: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, schema_version: _Optional[int] = ..., config: _Optional[_Union[SystemConfig, _Mapping]] = ..., components: _Optional[_Iterable[_Union[ComponentSpec, _Mapping]]] = ..., paths: _Optional[_Iterable[_Union[PathSpec, _Mapping]]] = ..., component_sources: _Optional[_Iterable[str]] = ..., removed_tasks: _Optional[_Iterable[str]] = ...) -> None: ...

class EvolutionState(_message.Message):
    __slots__ = ("iterations_done", "task", "generations_done", "population", "selections", "children_trained", "train_steps")
    class IterationsDoneEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class SelectionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ITERATIONS_DONE_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    GENERATIONS_DONE_FIELD_NUMBER: _ClassVar[int]
    POPULATION_FIELD_NUMBER: _ClassVar[int]
    SELECTIONS_FIELD_NUMBER: _ClassVar[int]
    CHILDREN_TRAINED_FIELD_NUMBER: _ClassVar[int]
    TRAIN_STEPS_FIELD_NUMBER: _ClassVar[int]
    iterations_done: _containers.ScalarMap[str, int]
    task: str
    generations_done: int
    population: _containers.RepeatedCompositeFieldContainer[PathSpec]
    selections: _containers.ScalarMap[str, int]
    children_trained: int
    train_steps: int
    def __init__(self, iterations_done: _Optional[_Mapping[str, int]] = ..., task: _Optional[str] = ..., generations_done: _Optional[int] = ..., population: _Optional[_Iterable[_Union[PathSpec, _Mapping]]] = ..., selections: _Optional[_Mapping[str, int]] = ..., children_trained: _Optional[int] = ..., train_steps: _Optional[int] = ...) -> None: ...

class EpochMetrics(_message.Message):
    __slots__ = ("train_loss", "train_accuracy", "validation_loss", "validation_accuracy")
    TRAIN_LOSS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_LOSS_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    train_loss: float
    train_accuracy: float
    validation_loss: float
    validation_accuracy: float
    def __init__(self, train_loss: _Optional[float] = ..., train_accuracy: _Optional[float] = ..., validation_loss: _Optional[float] = ..., validation_accuracy: _Optional[float] = ...) -> None: ...

class ChildRecord(_message.Message):
    __slots__ = ("task", "task_iteration", "generation", "index", "sequence", "parent_id", "path_id", "mutations", "hparams", "mutation_probs", "metrics", "added_params", "score", "parent_score", "kept", "best_score", "epochs", "component_ids", "system_components", "system_params", "wall_time_ms", "seconds", "author", "writer")
    class HparamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: HParamValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[HParamValue, _Mapping]] = ...) -> None: ...
    class MutationProbsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    TASK_FIELD_NUMBER: _ClassVar[int]
    TASK_ITERATION_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_ID_FIELD_NUMBER: _ClassVar[int]
    MUTATIONS_FIELD_NUMBER: _ClassVar[int]
    HPARAMS_FIELD_NUMBER: _ClassVar[int]
    MUTATION_PROBS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    ADDED_PARAMS_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    PARENT_SCORE_FIELD_NUMBER: _ClassVar[int]
    KEPT_FIELD_NUMBER: _ClassVar[int]
    BEST_SCORE_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    COMPONENT_IDS_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_PARAMS_FIELD_NUMBER: _ClassVar[int]
    WALL_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    WRITER_FIELD_NUMBER: _ClassVar[int]
    task: str
    task_iteration: int
    generation: int
    index: int
    sequence: int
    parent_id: str
    path_id: str
    mutations: _containers.RepeatedScalarFieldContainer[str]
    hparams: _containers.MessageMap[str, HParamValue]
    mutation_probs: _containers.ScalarMap[str, float]
    metrics: PathMetrics
    added_params: int
    score: float
    parent_score: float
    kept: bool
    best_score: float
    epochs: _containers.RepeatedCompositeFieldContainer[EpochMetrics]
    component_ids: _containers.RepeatedScalarFieldContainer[str]
    system_components: int
    system_params: int
    wall_time_ms: int
    seconds: float
    author: str
    writer: str
    def __init__(self, task: _Optional[str] = ..., task_iteration: _Optional[int] = ..., generation: _Optional[int] = ..., index: _Optional[int] = ..., sequence: _Optional[int] = ..., parent_id: _Optional[str] = ..., path_id: _Optional[str] = ..., mutations: _Optional[_Iterable[str]] = ..., hparams: _Optional[_Mapping[str, HParamValue]] = ..., mutation_probs: _Optional[_Mapping[str, float]] = ..., metrics: _Optional[_Union[PathMetrics, _Mapping]] = ..., added_params: _Optional[int] = ..., score: _Optional[float] = ..., parent_score: _Optional[float] = ..., kept: _Optional[bool] = ..., best_score: _Optional[float] = ..., epochs: _Optional[_Iterable[_Union[EpochMetrics, _Mapping]]] = ..., component_ids: _Optional[_Iterable[str]] = ..., system_components: _Optional[int] = ..., system_params: _Optional[int] = ..., wall_time_ms: _Optional[int] = ..., seconds: _Optional[float] = ..., author: _Optional[str] = ..., writer: _Optional[str] = ...) -> None: ...

class InflightRecord(_message.Message):
    __slots__ = ("task", "holder", "token", "expiry", "component_ids")
    TASK_FIELD_NUMBER: _ClassVar[int]
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRY_FIELD_NUMBER: _ClassVar[int]
    COMPONENT_IDS_FIELD_NUMBER: _ClassVar[int]
    task: str
    holder: str
    token: int
    expiry: float
    component_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, task: _Optional[str] = ..., holder: _Optional[str] = ..., token: _Optional[int] = ..., expiry: _Optional[float] = ..., component_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class AgentRecord(_message.Message):
    __slots__ = ("task", "holder", "mode", "task_iterations", "started", "devices")
    TASK_FIELD_NUMBER: _ClassVar[int]
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    TASK_ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    task: str
    holder: str
    mode: str
    task_iterations: int
    started: str
    devices: str
    def __init__(self, task: _Optional[str] = ..., holder: _Optional[str] = ..., mode: _Optional[str] = ..., task_iterations: _Optional[int] = ..., started: _Optional[str] = ..., devices: _Optional[str] = ...) -> None: ...

class ForkRecord(_message.Message):
    __slots__ = ("directory", "registered")
    DIRECTORY_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    directory: str
    registered: str
    def __init__(self, directory: _Optional[str] = ..., registered: _Optional[str] = ...) -> None: ...
